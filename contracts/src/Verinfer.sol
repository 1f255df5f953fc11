// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.37;

import {IERC20} from "./IERC20.sol";
import {MerkleConsistency} from "./MerkleConsistency.sol";

/// @title verinfer settlement
/// @notice One contract holds every token of the settlement layer: node
/// stakes (bonded and unbonding) and account balances (escrow). It keeps the
/// registry of inference nodes and verifiers, settles one log checkpoint per
/// transaction with the netted fee transfers of its receipts, slashes stake on
/// a verifier quorum's evidence, and lets stakers govern the parameters.
///
/// Conventions (see contracts/README.md for the full specification):
/// - time is `block.timestamp` in seconds (delays are seconds, not blocks);
/// - amounts are base units of `token`; account balances and stakes fit
///   uint128 (enforced on every inflow);
/// - verifier signatures are ECDSA (secp256k1) over EIP-712 digests with the
///   domain {name "verinfer", version "1", chainId, verifyingContract}, packed
///   65 bytes each (r, s, v) and ordered by strictly ascending signer address.
contract Verinfer {
    // ------------------------------------------------------------------
    // Constants
    // ------------------------------------------------------------------

    uint8 public constant ROLE_INFERENCE = 1;
    uint8 public constant ROLE_VERIFIER = 2;
    uint256 internal constant BPS = 10_000;

    // Governed parameters (the `param` of a proposal).
    uint8 public constant P_MIN_STAKE = 0;
    uint8 public constant P_QUORUM = 1;
    uint8 public constant P_SLASH_QUORUM = 2;
    uint8 public constant P_SLASH_BPS = 3;
    uint8 public constant P_SLASH_REWARD_BPS = 4;
    /// value = inferenceBps << 32 | verifierBps << 16 | treasuryBps
    uint8 public constant P_FEE_SPLIT = 5;
    uint8 public constant P_UNBOND_DELAY = 6;
    uint8 public constant P_WITHDRAW_DELAY = 7;
    uint8 public constant P_VOTING_PERIOD = 8;
    /// value = uint160(treasury address)
    uint8 public constant P_TREASURY = 9;
    /// key = model id, value = priceIn << 128 | priceOut (per token)
    uint8 public constant P_MODEL_ADMIT = 10;
    /// key = model id, value = 0
    uint8 public constant P_MODEL_REMOVE = 11;

    bytes32 internal constant DOMAIN_TYPEHASH =
        keccak256("EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)");
    bytes32 internal constant NAME_HASH = keccak256("verinfer");
    bytes32 internal constant VERSION_HASH = keccak256("1");
    /// @dev `bytes32[] transfers` is EIP-712-encoded as keccak256 of the
    /// concatenated words, which is keccak256(abi.encodePacked(transfers)).
    bytes32 public constant CHECKPOINT_TYPEHASH = keccak256(
        "Checkpoint(uint64 oldSize,uint64 newSize,bytes32 oldRoot,bytes32 newRoot,bytes32[] transfers,Hold[] holds)"
        "Hold(bytes32 result,address payer,address node,uint128 amount,uint64 window,bytes32 payout)"
    );
    bytes32 public constant HOLD_TYPEHASH =
        keccak256("Hold(bytes32 result,address payer,address node,uint128 amount,uint64 window,bytes32 payout)");
    bytes32 public constant CLAIM_TYPEHASH = keccak256("Claim(bytes32 account,address to)");
    /// @dev Prefix of the vault address of an account with no EVM address yet.
    bytes32 internal constant VAULT_TAG = keccak256("verinfer.vault.v1");
    bytes32 public constant SLASH_TYPEHASH =
        keccak256("Slash(address accused,bytes32 resultHash,bytes32 reasonHash,uint64 anchor)");

    /// @notice RFC 6962 root of the empty tree, SHA-256 of the empty string:
    /// the settled root before the first checkpoint.
    bytes32 public constant EMPTY_ROOT = 0xe3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855;

    // ------------------------------------------------------------------
    // Types
    // ------------------------------------------------------------------

    /// @dev Two storage slots; settlement reads only the first.
    struct Params {
        uint128 minStake; // bonded stake a node needs to be active
        uint16 quorum; // verifier signatures to settle a checkpoint
        uint16 slashQuorum; // verifier signatures to slash
        uint16 slashBps; // share of the accused's stake (bonded + unbonding) slashed
        uint16 slashRewardBps; // share of the slashed amount paid to the committee
        uint16 feeInferenceBps; // fee split, off-chain netting reads it; sums to 10000
        uint16 feeVerifierBps;
        uint16 feeTreasuryBps;
        uint32 unbondDelay; // seconds; never shorter than votingPeriod
        uint32 withdrawDelay; // seconds, escrow withdrawals
        uint32 votingPeriod; // seconds
        address treasury; // account credited with the treasury's share and slash remainders
    }

    struct Node {
        uint128 stake; // bonded
        uint64 unbondAt; // when `unbonding` can be withdrawn
        uint8 role; // 0 = not registered
        uint128 unbonding; // leaving, still slashable
        bytes32 nodeKey; // Ed25519 public key
        string endpoint;
    }

    struct Account {
        uint128 balance; // escrow: spendable by settlement, withdrawable after a request
        uint128 pending; // amount of the pending withdrawal request (0 = none)
        uint64 unlockAt; // when the pending withdrawal can be made
    }

    struct Model {
        bool admitted;
        uint128 priceIn; // per input token, base units
        uint128 priceOut; // per output token, base units
    }

    /// @notice An optimistic answer's fee, as a checkpoint brings it: taken
    /// from `payer` with the checkpoint's transfers, held for `window`
    /// seconds from the settlement's block, then paid out by the transfer
    /// words whose hash is `payout`, or refunded to `payer` on a challenge.
    /// `result` is the SHA-256 of the canonical signed Result (the `slash`
    /// result hash), `node` the address of the node that signed it.
    struct Hold {
        bytes32 result;
        address payer;
        address node;
        uint128 amount;
        uint64 window;
        bytes32 payout;
    }

    struct Held {
        address payer;
        uint64 until; // the window closes (block time, seconds)
        address node;
        uint128 amount;
        bytes32 payout;
    }

    struct InitialModel {
        bytes32 id;
        uint128 priceIn;
        uint128 priceOut;
    }

    /// @dev A node's bonded stake from the `epoch`-th proposal's creation on
    /// (`epoch` = proposalCount when the stake changed).
    struct StakePoint {
        uint64 epoch;
        uint128 stake;
    }

    struct Proposal {
        uint8 param;
        uint40 deadline; // voting ends (exclusive)
        uint40 expiresAt; // execution possible in [deadline, expiresAt)
        bool executed;
        uint128 totalStake; // snapshot of all bonded stake at creation
        uint128 yes;
        uint128 no;
        bytes32 key;
        uint256 value;
    }

    // ------------------------------------------------------------------
    // Errors
    // ------------------------------------------------------------------

    error InvalidParam();
    error ZeroAmount();
    error ZeroAddress();
    error AmountTooLarge();
    error TokenTransferFailed();
    // registry and staking
    error InvalidRole();
    error InvalidNodeKey();
    error NodeKeyTaken();
    error AlreadyRegistered();
    error NotRegistered(address node);
    error StakeBelowMinimum(uint256 stake, uint256 minimum);
    error InsufficientStake(uint256 stake, uint256 needed);
    error NothingUnbonding();
    error StillLocked(uint64 unlockAt);
    // signatures
    error BadSignatureLength();
    error QuorumNotMet(uint256 signatures, uint256 quorum);
    error InvalidSignature(uint256 index);
    error SignersNotAscending(uint256 index);
    error NotVerifier(address signer);
    // slashing
    error AccusedInCommittee();
    error CommitteeNotMajority(uint256 signatures, uint256 verifiers);
    error RegisteredAfterAnchor(address signer, uint64 since, uint64 anchor);
    error AnchorInFuture(uint64 anchor);
    error AlreadySlashed();
    error NothingToSlash();
    // escrow
    error InsufficientBalance(address account, uint256 balance, uint256 needed);
    error NoPendingWithdrawal();
    // settlement
    error StaleCheckpoint(uint64 settledSize, uint64 oldSize);
    error SizeNotIncreasing();
    error InvalidConsistencyProof();
    error TransfersNotSorted(uint256 index);
    error ZeroTransfer(uint256 index);
    error Unbalanced(int256 sum);
    // optimistic answers
    error HoldExists(bytes32 result);
    error NoHold(bytes32 result);
    error WindowOpen(uint64 until);
    error WindowClosed(uint64 until);
    error WrongPayout();
    error StakeHeld(uint64 until);
    // governance
    error NotStaker();
    error UnknownProposal();
    error VotingClosed();
    error VotingOpen();
    error AlreadyVoted();
    error AlreadyExecuted();
    error ProposalExpired();
    error NotPassed();
    error OutOfBounds(uint8 param, uint256 value, uint256 min, uint256 max);
    error StakeLocked(uint64 until);

    // ------------------------------------------------------------------
    // Events
    // ------------------------------------------------------------------

    event NodeRegistered(address indexed node, uint8 role, bytes32 indexed nodeKey, string endpoint, uint256 stake);
    event EndpointChanged(address indexed node, string endpoint);
    event Staked(address indexed node, uint256 amount, uint256 stake);
    event UnbondStarted(address indexed node, uint256 amount, uint64 unlockAt);
    event UnbondWithdrawn(address indexed node, uint256 amount);
    event Slashed(
        address indexed accused, bytes32 indexed resultHash, bytes32 reasonHash, uint256 amount, uint256 committeeReward
    );
    event Deposited(address indexed from, address indexed account, uint256 amount);
    event WithdrawalRequested(address indexed account, uint256 amount, uint64 unlockAt);
    event WithdrawalCancelled(address indexed account);
    event Withdrawn(address indexed account, uint256 amount);
    event CheckpointSettled(uint64 indexed newSize, uint64 oldSize, bytes32 newRoot, bytes32 transfersHash);
    event FeeHeld(bytes32 indexed result, address indexed payer, address indexed node, uint256 amount, uint64 until);
    event Released(bytes32 indexed result, uint256 amount);
    event Challenged(bytes32 indexed result, address indexed payer, uint256 amount);
    event Claimed(bytes32 indexed account, address indexed vault, address indexed to, uint256 amount);
    event Proposed(
        uint256 indexed id, address indexed proposer, uint8 param, bytes32 key, uint256 value, uint64 deadline
    );
    event Voted(uint256 indexed id, address indexed voter, bool support, uint256 weight);
    event Executed(uint256 indexed id, uint8 param, bytes32 key, uint256 value);

    // ------------------------------------------------------------------
    // Storage
    // ------------------------------------------------------------------

    IERC20 public immutable token;
    uint256 private immutable cachedChainId;
    bytes32 private immutable cachedDomainSeparator;

    Params public params;
    /// @notice Size and root of the last settled checkpoint.
    uint64 public settledSize;
    uint64 public proposalCount;
    bytes32 public settledRoot;
    /// @notice Sums kept so that token.balanceOf(this) == totalEscrow + totalStaked + totalUnbonding
    /// (escrow: account balances and held fees).
    uint128 public totalEscrow;
    uint128 public totalStaked;
    uint128 public totalUnbonding;
    /// @notice Addresses ever registered as verifiers (registration is
    /// permanent).
    uint64 public verifierCount;
    /// @notice When each verifier registered (block time, seconds).
    mapping(address => uint64) public verifierSince;
    /// @dev Registration times of all verifiers, in order: how many were
    /// registered at any time (`verifiersAt`).
    uint64[] internal verifierTimes;

    mapping(address => Node) public nodes;
    mapping(bytes32 => address) public nodeByKey;
    mapping(address => Account) public accounts;
    mapping(bytes32 => Model) public models;
    /// @notice keccak256(abi.encode(resultHash, accused)) => already slashed.
    mapping(bytes32 => bool) public slashed;
    mapping(uint256 => Proposal) public proposals;
    mapping(uint256 => mapping(address => bool)) public voted;
    /// @dev Each node's bonded stake over proposal epochs: the snapshots votes are weighed by.
    mapping(address => StakePoint[]) internal stakeHistory;
    /// @notice Optimistic answers' fees in their window, by result hash.
    mapping(bytes32 => Held) public held;
    /// @notice Until when a node's unbonded stake cannot be withdrawn: the
    /// latest window of an answer it was held for (its stake answers for it).
    mapping(address => uint64) public heldUntil;
    /// @notice Until when a node's bonded stake cannot be unbonded: the end of
    /// the latest vote it took part in.
    mapping(address => uint64) public voteLockedUntil;

    constructor(IERC20 token_, Params memory params_, InitialModel[] memory models_) {
        if (address(token_).code.length == 0) revert InvalidParam();
        _checkParams(params_);
        token = token_;
        params = params_;
        settledRoot = EMPTY_ROOT;
        for (uint256 i; i < models_.length; ++i) {
            InitialModel memory m = models_[i];
            if (m.id == bytes32(0)) revert InvalidParam();
            models[m.id] = Model(true, m.priceIn, m.priceOut);
        }
        cachedChainId = block.chainid;
        cachedDomainSeparator = _buildDomainSeparator();
    }

    // ------------------------------------------------------------------
    // Registry and staking
    // ------------------------------------------------------------------

    /// @notice Register msg.sender as a node of `role` with its Ed25519 key,
    /// its endpoint, and an initial stake of at least the minimum (pulled with
    /// transferFrom: approve first). The Ed25519 key is taken as given (no
    /// proof of possession on chain) and can be claimed by one address only.
    function register(uint8 role, bytes32 nodeKey, string calldata endpoint, uint256 amount) external {
        if (role != ROLE_INFERENCE && role != ROLE_VERIFIER) revert InvalidRole();
        Node storage nd = nodes[msg.sender];
        if (nd.role != 0) revert AlreadyRegistered();
        if (nodeKey == bytes32(0)) revert InvalidNodeKey();
        if (nodeByKey[nodeKey] != address(0)) revert NodeKeyTaken();
        uint256 minStake = params.minStake;
        if (amount < minStake) revert StakeBelowMinimum(amount, minStake);
        totalStaked = _add128(totalStaked, amount);
        nd.role = role;
        if (role == ROLE_VERIFIER) {
            ++verifierCount;
            verifierSince[msg.sender] = uint64(block.timestamp);
            verifierTimes.push(uint64(block.timestamp));
        }
        _setStake(msg.sender, nd, amount);
        nd.nodeKey = nodeKey;
        nd.endpoint = endpoint;
        nodeByKey[nodeKey] = msg.sender;
        _pull(msg.sender, amount);
        emit NodeRegistered(msg.sender, role, nodeKey, endpoint, amount);
    }

    function setEndpoint(string calldata endpoint) external {
        Node storage nd = nodes[msg.sender];
        if (nd.role == 0) revert NotRegistered(msg.sender);
        nd.endpoint = endpoint;
        emit EndpointChanged(msg.sender, endpoint);
    }

    /// @notice Add to msg.sender's bonded stake.
    function stake(uint256 amount) external {
        Node storage nd = nodes[msg.sender];
        if (nd.role == 0) revert NotRegistered(msg.sender);
        if (amount == 0) revert ZeroAmount();
        totalStaked = _add128(totalStaked, amount);
        uint128 s = nd.stake + uint128(amount); // cannot wrap: bounded by totalStaked
        _setStake(msg.sender, nd, s);
        _pull(msg.sender, amount);
        emit Staked(msg.sender, amount, s);
    }

    /// @notice Move `amount` of bonded stake to unbonding; it can be withdrawn
    /// `unbondDelay` seconds later and stays slashable until then. What stays
    /// bonded must be zero or at least the minimum. A new unbond adds to the
    /// amount already unbonding and restarts its delay. Stake that voted
    /// stays bonded until that vote ends, so it cannot vote again elsewhere.
    function unbond(uint256 amount) external {
        Node storage nd = nodes[msg.sender];
        if (nd.role == 0) revert NotRegistered(msg.sender);
        if (amount == 0) revert ZeroAmount();
        uint64 locked = voteLockedUntil[msg.sender];
        if (block.timestamp < locked) revert StakeLocked(locked);
        uint256 bonded = nd.stake;
        if (amount > bonded) revert InsufficientStake(bonded, amount);
        uint256 left = bonded - amount;
        uint256 minStake = params.minStake;
        if (left != 0 && left < minStake) revert StakeBelowMinimum(left, minStake);
        uint64 unlockAt = uint64(block.timestamp) + params.unbondDelay;
        _setStake(msg.sender, nd, left);
        nd.unbonding += uint128(amount);
        nd.unbondAt = unlockAt;
        totalStaked -= uint128(amount);
        totalUnbonding += uint128(amount);
        emit UnbondStarted(msg.sender, amount, unlockAt);
    }

    /// @notice Withdraw all of msg.sender's unbonded stake once its delay passed.
    function withdrawUnbonded() external {
        Node storage nd = nodes[msg.sender];
        uint256 amount = nd.unbonding;
        if (amount == 0) revert NothingUnbonding();
        if (block.timestamp < nd.unbondAt) revert StillLocked(nd.unbondAt);
        uint64 heldTo = heldUntil[msg.sender];
        if (block.timestamp < heldTo) revert StakeHeld(heldTo);
        nd.unbonding = 0;
        totalUnbonding -= uint128(amount);
        _push(msg.sender, amount);
        emit UnbondWithdrawn(msg.sender, amount);
    }

    /// @notice Slash `accused` on the evidence of a quorum (`slashQuorum`) of
    /// active verifiers, none of them the accused, who signed the EIP-712
    /// `Slash(accused, resultHash, reasonHash, anchor)`, each registered at
    /// `anchor` (the time, in seconds, of the Result's commitment, which fixed
    /// its committee) and together a strict majority of the verifiers
    /// registered then (`verifiersAt(anchor)`): no minority of them, and no
    /// verifier registered after the Result was committed, can slash. Takes `slashBps` of the
    /// accused's bonded plus unbonding stake (bonded first); `slashRewardBps`
    /// of it is shared equally by the signers, the rest (and the rounding
    /// remainder) goes to the treasury account. A (resultHash, accused) pair
    /// is slashed at most once.
    function slash(address accused, bytes32 resultHash, bytes32 reasonHash, uint64 anchor, bytes calldata sigs)
        external
    {
        if (anchor > block.timestamp) revert AnchorInFuture(anchor);
        bytes32 key = keccak256(abi.encode(resultHash, accused));
        if (slashed[key]) revert AlreadySlashed();
        _slash(key, accused, resultHash, reasonHash, anchor, sigs);
    }

    function _slash(
        bytes32 key,
        address accused,
        bytes32 resultHash,
        bytes32 reasonHash,
        uint64 anchor,
        bytes calldata sigs
    ) private {
        slashed[key] = true;
        uint256 amount = _takeStake(accused);
        uint256 reward = _payCommittee(slashDigest(accused, resultHash, reasonHash, anchor), sigs, accused, anchor, amount);
        totalEscrow += uint128(amount);
        accounts[params.treasury].balance += uint128(amount - reward);
        emit Slashed(accused, resultHash, reasonHash, amount, reward);
    }

    /// @notice Overturn the optimistic answer `resultHash` inside its window
    /// on the same evidence and signatures as `slash` of the node that signed
    /// it (the same committee rule, anchor included): its held fee goes back
    /// to the payer, nobody else is paid, and the node is slashed unless that
    /// fault was slashed already or it has no stake left.
    function challenge(bytes32 resultHash, bytes32 reasonHash, uint64 anchor, bytes calldata sigs) external {
        Held memory h = held[resultHash];
        if (h.until == 0) revert NoHold(resultHash);
        if (block.timestamp >= h.until) revert WindowClosed(h.until);
        if (anchor > block.timestamp) revert AnchorInFuture(anchor);
        bytes32 key = keccak256(abi.encode(resultHash, h.node));
        Node storage nd = nodes[h.node];
        if (!slashed[key] && (uint256(nd.stake) + nd.unbonding) * params.slashBps / BPS != 0) {
            _slash(key, h.node, resultHash, reasonHash, anchor, sigs);
        } else {
            _payCommittee(slashDigest(h.node, resultHash, reasonHash, anchor), sigs, h.node, anchor, 0);
        }
        delete held[resultHash];
        accounts[h.payer].balance += h.amount; // still counted in totalEscrow
        emit Challenged(resultHash, h.payer, h.amount);
    }

    /// @notice Pay out an optimistic answer's held fee once its window has
    /// closed, by the transfer words the checkpoint's signers committed to
    /// (`Hold.payout`). Anyone may call it.
    function release(bytes32 resultHash, bytes32[] calldata payout) external {
        Held memory h = held[resultHash];
        if (h.until == 0) revert NoHold(resultHash);
        if (block.timestamp < h.until) revert WindowOpen(h.until);
        if (_hashWords(payout) != h.payout) revert WrongPayout();
        delete held[resultHash];
        int256 sum = _applyTransfers(payout);
        if (sum != int256(uint256(h.amount))) revert Unbalanced(sum);
        emit Released(resultHash, h.amount);
    }

    /// @notice The escrow address that holds what settlement paid to
    /// `account` (an Ed25519 key) before it linked an EVM address: nobody
    /// holds its key; `claim` moves its balance.
    function vault(bytes32 account) public pure returns (address) {
        return address(uint160(uint256(keccak256(abi.encode(VAULT_TAG, account)))));
    }

    /// @notice Move the balance of `account`'s vault to `to`, on a quorum of
    /// verifiers' signatures over the EIP-712 `Claim(account, to)`: they sign
    /// once they have checked the account's Ed25519 signature linking it to
    /// `to`.
    function claim(bytes32 account, address to, bytes calldata sigs) external {
        if (to == address(0)) revert ZeroAddress();
        Params storage p = params;
        bytes32 digest = _hashTypedData(keccak256(abi.encode(CLAIM_TYPEHASH, account, to)));
        _checkQuorum(digest, sigs, p.quorum, p.minStake, address(0), 0, type(uint64).max);
        address from = vault(account);
        uint128 amount = accounts[from].balance;
        if (amount == 0) revert ZeroAmount();
        accounts[from].balance = 0;
        accounts[to].balance += amount;
        emit Claimed(account, from, to, amount);
    }

    /// @dev Checks a slash's signers against the registry at `anchor` and
    /// credits each its share of `amount`; returns what they got in all.
    function _payCommittee(bytes32 digest, bytes calldata sigs, address accused, uint64 anchor, uint256 amount)
        private
        returns (uint256)
    {
        uint256 n = sigs.length / 65;
        Params storage p = params;
        uint256 each = n == 0 ? 0 : amount * p.slashRewardBps / BPS / n;
        _checkQuorum(digest, sigs, p.slashQuorum, p.minStake, accused, each, anchor);
        uint256 eligible = verifiersAt(anchor);
        if (n * 2 <= eligible) revert CommitteeNotMajority(n, eligible);
        return each * n;
    }

    /// @dev Removes `slashBps` of the node's bonded + unbonding stake, bonded first.
    function _takeStake(address accused) private returns (uint256 amount) {
        Node storage nd = nodes[accused];
        if (nd.role == 0) revert NotRegistered(accused);
        uint256 bonded = nd.stake;
        uint256 unbondingAmt = nd.unbonding;
        amount = (bonded + unbondingAmt) * params.slashBps / BPS;
        if (amount == 0) revert NothingToSlash();
        uint256 fromStake = amount <= bonded ? amount : bonded;
        uint256 fromUnbonding = amount - fromStake;
        _setStake(accused, nd, bonded - fromStake);
        nd.unbonding = uint128(unbondingAmt - fromUnbonding);
        totalStaked -= uint128(fromStake);
        totalUnbonding -= uint128(fromUnbonding);
    }

    // ------------------------------------------------------------------
    // Escrow
    // ------------------------------------------------------------------

    /// @notice Deposit `amount` (pulled from msg.sender) into `account`'s balance.
    function deposit(address account, uint256 amount) external {
        if (account == address(0)) revert ZeroAddress();
        if (amount == 0) revert ZeroAmount();
        totalEscrow = _add128(totalEscrow, amount);
        accounts[account].balance += uint128(amount); // bounded by totalEscrow
        _pull(msg.sender, amount);
        emit Deposited(msg.sender, account, amount);
    }

    /// @notice Ask to withdraw `amount` after `withdrawDelay`; replaces any
    /// pending request and restarts the delay. Settlement may still debit the
    /// balance meanwhile (fees of requests already served); `withdraw` then
    /// pays what is left, up to `amount`: a token is never both spent and
    /// withdrawn. Gateways should treat balance - pending as spendable.
    function requestWithdrawal(uint256 amount) external {
        if (amount == 0) revert ZeroAmount();
        Account storage a = accounts[msg.sender];
        uint256 bal = a.balance;
        if (amount > bal) revert InsufficientBalance(msg.sender, bal, amount);
        uint64 unlockAt = uint64(block.timestamp) + params.withdrawDelay;
        a.pending = uint128(amount);
        a.unlockAt = unlockAt;
        emit WithdrawalRequested(msg.sender, amount, unlockAt);
    }

    function cancelWithdrawal() external {
        Account storage a = accounts[msg.sender];
        if (a.pending == 0) revert NoPendingWithdrawal();
        a.pending = 0;
        a.unlockAt = 0;
        emit WithdrawalCancelled(msg.sender);
    }

    /// @notice Complete the pending withdrawal: pays min(pending, balance).
    function withdraw() external {
        Account storage a = accounts[msg.sender];
        uint256 pending = a.pending;
        if (pending == 0) revert NoPendingWithdrawal();
        uint64 unlockAt = a.unlockAt;
        if (block.timestamp < unlockAt) revert StillLocked(unlockAt);
        uint256 bal = a.balance;
        uint256 amount = pending < bal ? pending : bal;
        a.balance = uint128(bal - amount);
        a.pending = 0;
        a.unlockAt = 0;
        totalEscrow -= uint128(amount);
        if (amount != 0) _push(msg.sender, amount);
        emit Withdrawn(msg.sender, amount);
    }

    // ------------------------------------------------------------------
    // Settlement of checkpoints
    // ------------------------------------------------------------------

    /// @notice Settle the log checkpoint (newSize, newRoot) that extends the
    /// last settled one, with the netted fee transfers of its receipts.
    /// @param oldSize must equal `settledSize` (a batch is applied once).
    /// @param newSize must be greater than oldSize (history never shrinks).
    /// @param proof RFC 9162 consistency proof from (settledSize, settledRoot)
    /// to (newSize, newRoot); empty when settledSize is 0.
    /// @param transfers one word per account: address << 96 | uint96(int96
    /// delta), negative = debit from the account's balance, positive = credit;
    /// accounts strictly ascending (so each appears once), no zero delta, and
    /// the deltas and the holds' amounts sum to exactly zero.
    /// @param holds the optimistic answers' fees the transfers took from
    /// their payers, each held from now for its window (see `Hold`).
    /// @param sigs at least `quorum` signatures of active verifiers, 65 bytes
    /// each, ascending by signer, over the EIP-712 Checkpoint(oldSize,
    /// newSize, oldRoot = settledRoot, newRoot, transfers, holds).
    function settle(
        uint64 oldSize,
        uint64 newSize,
        bytes32 newRoot,
        bytes32[] calldata proof,
        bytes32[] calldata transfers,
        Hold[] calldata holds,
        bytes calldata sigs
    ) external {
        _checkExtension(oldSize, newSize, newRoot, proof);
        {
            // Scoped: settle's arguments leave little room on the stack.
            bytes32 digest =
                _hashTypedData(_checkpointHash(oldSize, newSize, settledRoot, newRoot, transfers, holds));
            _checkQuorum(digest, sigs, params.quorum, params.minStake, address(0), 0, type(uint64).max);
        }
        int256 sum = _applyTransfers(transfers) + _hold(holds);
        if (sum != 0) revert Unbalanced(sum);
        settledSize = newSize;
        settledRoot = newRoot;
        emit CheckpointSettled(newSize, oldSize, newRoot, _hashWords(transfers));
    }

    /// @dev Checks that (newSize, newRoot) extends the settled checkpoint.
    function _checkExtension(uint64 oldSize, uint64 newSize, bytes32 newRoot, bytes32[] calldata proof) internal view {
        uint64 size = settledSize;
        if (oldSize != size) revert StaleCheckpoint(size, oldSize);
        if (newSize <= oldSize) revert SizeNotIncreasing();
        if (oldSize == 0) {
            if (proof.length != 0) revert InvalidConsistencyProof();
        } else if (!MerkleConsistency.verify(oldSize, newSize, settledRoot, newRoot, proof)) {
            revert InvalidConsistencyProof();
        }
    }

    /// @dev Holds each optimistic answer's fee from now for its window;
    /// returns their sum.
    function _hold(Hold[] calldata holds) internal returns (int256 sum) {
        for (uint256 i; i < holds.length; ++i) {
            Hold calldata h = holds[i];
            if (held[h.result].until != 0) revert HoldExists(h.result);
            uint64 until = uint64(block.timestamp) + h.window;
            held[h.result] = Held(h.payer, until, h.node, h.amount, h.payout);
            if (heldUntil[h.node] < until) heldUntil[h.node] = until;
            sum += int256(uint256(h.amount));
            emit FeeHeld(h.result, h.payer, h.node, h.amount, until);
        }
    }

    /// @dev Applies transfer words; returns the sum of their deltas.
    function _applyTransfers(bytes32[] calldata transfers) internal returns (int256 sum) {
        uint256 prev;
        uint256 n = transfers.length;
        for (uint256 i; i < n;) {
            uint256 w = uint256(transfers[i]);
            uint256 acct = w >> 96;
            if (acct <= prev) revert TransfersNotSorted(i); // also rejects address(0)
            prev = acct;
            int256 delta = int96(uint96(w));
            if (delta == 0) revert ZeroTransfer(i);
            Account storage a = accounts[address(uint160(acct))];
            if (delta < 0) {
                uint256 amount = uint256(-delta);
                uint256 bal = a.balance;
                if (bal < amount) revert InsufficientBalance(address(uint160(acct)), bal, amount);
                unchecked {
                    a.balance = uint128(bal - amount);
                }
            } else {
                // Checked: only an unbalanced batch (reverted below) could wrap.
                a.balance += uint128(uint256(delta));
            }
            unchecked {
                sum += delta;
                ++i;
            }
        }
    }

    // ------------------------------------------------------------------
    // Governance
    // ------------------------------------------------------------------

    /// @notice Propose setting `param` (P_* constant) to `value` (with `key`
    /// for models). Only an active node (bonded stake >= minimum) proposes.
    /// Voting lasts `votingPeriod`; a passed proposal can be executed during
    /// one more voting period after that.
    function propose(uint8 param, bytes32 key, uint256 value) external returns (uint256 id) {
        Params memory p = params;
        if (nodes[msg.sender].stake < p.minStake) revert NotStaker();
        _validate(param, key, value);
        id = ++proposalCount;
        uint40 deadline = uint40(block.timestamp) + p.votingPeriod;
        proposals[id] = Proposal({
            param: param,
            deadline: deadline,
            expiresAt: deadline + p.votingPeriod,
            executed: false,
            totalStake: totalStaked,
            yes: 0,
            no: 0,
            key: key,
            value: value
        });
        emit Proposed(id, msg.sender, param, key, value, deadline);
    }

    /// @notice Vote once per proposal, weighted by msg.sender's bonded stake
    /// at the proposal's creation, or its stake now if a slash lowered it
    /// since: stake added later (moved from another address) adds nothing.
    /// The voter's stake stays bonded until the vote ends.
    function vote(uint256 id, bool support) external {
        Proposal storage pr = proposals[id];
        if (pr.deadline == 0) revert UnknownProposal();
        if (block.timestamp >= pr.deadline) revert VotingClosed();
        if (voted[id][msg.sender]) revert AlreadyVoted();
        uint128 weight = stakeAt(msg.sender, id);
        uint128 current = nodes[msg.sender].stake;
        if (current < weight) weight = current;
        if (weight == 0) revert NotStaker();
        voted[id][msg.sender] = true;
        if (voteLockedUntil[msg.sender] < pr.deadline) voteLockedUntil[msg.sender] = pr.deadline;
        if (support) pr.yes += weight;
        else pr.no += weight;
        emit Voted(id, msg.sender, support, weight);
    }

    /// @notice Execute a proposal after its vote: it passes when yes votes
    /// exceed half of the total bonded stake at its creation and exceed the no
    /// votes. Anyone may execute.
    function execute(uint256 id) external {
        Proposal storage pr = proposals[id];
        if (pr.deadline == 0) revert UnknownProposal();
        if (pr.executed) revert AlreadyExecuted();
        if (block.timestamp < pr.deadline) revert VotingOpen();
        if (block.timestamp >= pr.expiresAt) revert ProposalExpired();
        uint256 yes = pr.yes;
        if (yes * 2 <= pr.totalStake || yes <= pr.no) revert NotPassed();
        pr.executed = true;
        uint8 param = pr.param;
        bytes32 key = pr.key;
        uint256 value = pr.value;
        if (param == P_MODEL_ADMIT) {
            _validate(param, key, value);
            models[key] = Model(true, uint128(value >> 128), uint128(value));
        } else if (param == P_MODEL_REMOVE) {
            _validate(param, key, value);
            delete models[key];
        } else {
            params = _withParam(param, key, value);
        }
        emit Executed(id, param, key, value);
    }

    function _validate(uint8 param, bytes32 key, uint256 value) internal view {
        if (param == P_MODEL_ADMIT) {
            if (key == bytes32(0)) revert InvalidParam();
        } else if (param == P_MODEL_REMOVE) {
            if (!models[key].admitted || value != 0) revert InvalidParam();
        } else {
            _withParam(param, key, value);
        }
    }

    /// @dev The current parameters with one changed, checked as a whole.
    function _withParam(uint8 param, bytes32 key, uint256 value) internal view returns (Params memory p) {
        if (key != bytes32(0)) revert InvalidParam();
        p = params;
        if (param == P_MIN_STAKE) {
            p.minStake = uint128(_fit(value, 128));
        } else if (param == P_QUORUM) {
            p.quorum = uint16(_fit(value, 16));
        } else if (param == P_SLASH_QUORUM) {
            p.slashQuorum = uint16(_fit(value, 16));
        } else if (param == P_SLASH_BPS) {
            p.slashBps = uint16(_fit(value, 16));
        } else if (param == P_SLASH_REWARD_BPS) {
            p.slashRewardBps = uint16(_fit(value, 16));
        } else if (param == P_FEE_SPLIT) {
            _fit(value, 48);
            p.feeInferenceBps = uint16(value >> 32);
            p.feeVerifierBps = uint16(value >> 16);
            p.feeTreasuryBps = uint16(value);
        } else if (param == P_UNBOND_DELAY) {
            p.unbondDelay = uint32(_fit(value, 32));
        } else if (param == P_WITHDRAW_DELAY) {
            p.withdrawDelay = uint32(_fit(value, 32));
        } else if (param == P_VOTING_PERIOD) {
            p.votingPeriod = uint32(_fit(value, 32));
        } else if (param == P_TREASURY) {
            p.treasury = address(uint160(_fit(value, 160)));
        } else {
            revert InvalidParam();
        }
        _checkParams(p);
    }

    function _fit(uint256 value, uint256 bits) private pure returns (uint256) {
        if (value >> bits != 0) revert InvalidParam();
        return value;
    }

    /// @notice The bounds of each governed number, the same as the embedded
    /// ledger's (docs/design.md, "Governance"): no vote can set a value
    /// outside them. The fee split is bounded by its sum, the treasury by
    /// being non-zero; the majority a proposal needs is not a parameter.
    function paramBounds(uint8 param) public pure returns (uint256 min, uint256 max) {
        if (param == P_MIN_STAKE) return (1 ether, 1e9 ether); // a node risks something; registration stays possible
        if (param == P_QUORUM) return (1, 32); // a certificate needs a verifier; a quorum stays reachable
        if (param == P_SLASH_QUORUM) return (1, 32); // a fault needs a witness; a slash stays reachable
        if (param == P_SLASH_BPS) return (100, BPS); // cheating always costs; at most the whole stake
        if (param == P_SLASH_REWARD_BPS) return (0, BPS); // a share of what is slashed
        if (param == P_UNBOND_DELAY) return (1 hours, 90 days); // time to prove a fault; stake can leave
        if (param == P_WITHDRAW_DELAY) return (1 hours, 30 days); // time to settle what is owed; funds can leave
        if (param == P_VOTING_PERIOD) return (1 hours, 30 days); // stakers can react; a vote ends
        revert InvalidParam();
    }

    function _bounded(uint8 param, uint256 value) private pure {
        (uint256 min, uint256 max) = paramBounds(param);
        if (value < min || value > max) revert OutOfBounds(param, value, min, max);
    }

    function _checkParams(Params memory p) internal pure {
        _bounded(P_MIN_STAKE, p.minStake);
        _bounded(P_QUORUM, p.quorum);
        _bounded(P_SLASH_QUORUM, p.slashQuorum);
        _bounded(P_SLASH_BPS, p.slashBps);
        _bounded(P_SLASH_REWARD_BPS, p.slashRewardBps);
        _bounded(P_UNBOND_DELAY, p.unbondDelay);
        _bounded(P_WITHDRAW_DELAY, p.withdrawDelay);
        _bounded(P_VOTING_PERIOD, p.votingPeriod);
        if (
            uint256(p.feeInferenceBps) + p.feeVerifierBps + p.feeTreasuryBps != BPS || p.unbondDelay < p.votingPeriod
                || p.treasury == address(0)
        ) revert InvalidParam();
    }

    /// @notice `node`'s bonded stake when proposal `id` was created.
    function stakeAt(address node, uint256 id) public view returns (uint128) {
        StakePoint[] storage h = stakeHistory[node];
        // The last point with epoch < id: set before proposal `id` existed.
        uint256 lo = 0;
        uint256 hi = h.length;
        while (lo < hi) {
            uint256 mid = (lo + hi) / 2;
            if (h[mid].epoch < id) lo = mid + 1;
            else hi = mid;
        }
        return lo == 0 ? 0 : h[lo - 1].stake;
    }

    /// @dev Sets a node's bonded stake and records it for later snapshots.
    function _setStake(address who, Node storage nd, uint256 amount) private {
        nd.stake = uint128(amount);
        StakePoint[] storage h = stakeHistory[who];
        uint64 epoch = proposalCount;
        if (h.length != 0 && h[h.length - 1].epoch == epoch) h[h.length - 1].stake = uint128(amount);
        else h.push(StakePoint(epoch, uint128(amount)));
    }

    // ------------------------------------------------------------------
    // Signatures (EIP-712)
    // ------------------------------------------------------------------

    /// @dev Checks that `sigs` holds at least `quorum` signatures over
    /// `digest` by distinct (strictly ascending) active verifiers, none equal
    /// to `excluded`; credits `creditEach` to each signer's account.
    function _checkQuorum(
        bytes32 digest,
        bytes calldata sigs,
        uint256 quorum,
        uint256 minStake,
        address excluded,
        uint256 creditEach,
        uint64 registeredBy
    ) internal {
        if (sigs.length % 65 != 0) revert BadSignatureLength();
        uint256 n = sigs.length / 65;
        if (n < quorum) revert QuorumNotMet(n, quorum);
        address prev;
        for (uint256 i; i < n; ++i) {
            bytes32 r;
            bytes32 s;
            uint8 v;
            assembly ("memory-safe") {
                let o := add(sigs.offset, mul(i, 65))
                r := calldataload(o)
                s := calldataload(add(o, 32))
                v := byte(0, calldataload(add(o, 64)))
            }
            address signer = ecrecover(digest, v, r, s);
            if (signer == address(0)) revert InvalidSignature(i);
            if (signer <= prev) revert SignersNotAscending(i);
            prev = signer;
            if (signer == excluded) revert AccusedInCommittee();
            Node storage nd = nodes[signer];
            if (nd.role != ROLE_VERIFIER || nd.stake < minStake) revert NotVerifier(signer);
            uint64 since = verifierSince[signer];
            if (since > registeredBy) revert RegisteredAfterAnchor(signer, since, registeredBy);
            if (creditEach != 0) accounts[signer].balance += uint128(creditEach);
        }
    }

    function checkpointDigest(
        uint64 oldSize,
        uint64 newSize,
        bytes32 oldRoot,
        bytes32 newRoot,
        bytes32[] calldata transfers,
        Hold[] calldata holds
    ) external view returns (bytes32) {
        return _hashTypedData(_checkpointHash(oldSize, newSize, oldRoot, newRoot, transfers, holds));
    }

    function _checkpointHash(
        uint64 oldSize,
        uint64 newSize,
        bytes32 oldRoot,
        bytes32 newRoot,
        bytes32[] calldata transfers,
        Hold[] calldata holds
    ) internal pure returns (bytes32) {
        return keccak256(
            abi.encode(CHECKPOINT_TYPEHASH, oldSize, newSize, oldRoot, newRoot, _hashWords(transfers), _hashHolds(holds))
        );
    }

    function claimDigest(bytes32 account, address to) external view returns (bytes32) {
        return _hashTypedData(keccak256(abi.encode(CLAIM_TYPEHASH, account, to)));
    }

    /// @dev EIP-712 encoding of `Hold[]`: keccak256 of the concatenated struct hashes.
    function _hashHolds(Hold[] calldata holds) internal pure returns (bytes32) {
        bytes32[] memory hs = new bytes32[](holds.length);
        for (uint256 i; i < holds.length; ++i) {
            Hold calldata h = holds[i];
            hs[i] = keccak256(abi.encode(HOLD_TYPEHASH, h.result, h.payer, h.node, h.amount, h.window, h.payout));
        }
        return keccak256(abi.encodePacked(hs));
    }

    function slashDigest(address accused, bytes32 resultHash, bytes32 reasonHash, uint64 anchor)
        public
        view
        returns (bytes32)
    {
        return _hashTypedData(keccak256(abi.encode(SLASH_TYPEHASH, accused, resultHash, reasonHash, anchor)));
    }

    /// @notice How many verifiers were registered at time `t` (seconds).
    function verifiersAt(uint64 t) public view returns (uint256 lo) {
        uint256 hi = verifierTimes.length;
        while (lo < hi) {
            uint256 mid = (lo + hi) / 2;
            if (verifierTimes[mid] <= t) lo = mid + 1;
            else hi = mid;
        }
    }

    function domainSeparator() public view returns (bytes32) {
        return block.chainid == cachedChainId ? cachedDomainSeparator : _buildDomainSeparator();
    }

    /// @notice ERC-5267.
    function eip712Domain()
        external
        view
        returns (
            bytes1 fields,
            string memory name,
            string memory version,
            uint256 chainId,
            address verifyingContract,
            bytes32 salt,
            uint256[] memory extensions
        )
    {
        return (hex"0f", "verinfer", "1", block.chainid, address(this), bytes32(0), new uint256[](0));
    }

    function _buildDomainSeparator() private view returns (bytes32) {
        return keccak256(abi.encode(DOMAIN_TYPEHASH, NAME_HASH, VERSION_HASH, block.chainid, address(this)));
    }

    function _hashTypedData(bytes32 structHash) internal view returns (bytes32 h) {
        bytes32 ds = domainSeparator();
        assembly ("memory-safe") {
            let p := mload(0x40)
            mstore(p, hex"1901")
            mstore(add(p, 2), ds)
            mstore(add(p, 34), structHash)
            h := keccak256(p, 66)
        }
    }

    /// @dev keccak256 of the concatenated words (EIP-712 encoding of bytes32[]).
    function _hashWords(bytes32[] calldata words) internal pure returns (bytes32 h) {
        assembly ("memory-safe") {
            let p := mload(0x40)
            let len := shl(5, words.length)
            calldatacopy(p, words.offset, len)
            h := keccak256(p, len)
        }
    }

    // ------------------------------------------------------------------
    // Views and token plumbing
    // ------------------------------------------------------------------

    /// @notice The last settled checkpoint, read atomically.
    function checkpoint() external view returns (uint64 size, bytes32 root) {
        return (settledSize, settledRoot);
    }

    function isSlashed(bytes32 resultHash, address accused) external view returns (bool) {
        return slashed[keccak256(abi.encode(resultHash, accused))];
    }

    function isActiveVerifier(address a) external view returns (bool) {
        Node storage nd = nodes[a];
        return nd.role == ROLE_VERIFIER && nd.stake >= params.minStake;
    }

    /// @notice Escrow, bonded and unbonding totals; their sum is what the
    /// contract holds of `token`.
    function totals() external view returns (uint256 escrow, uint256 staked, uint256 unbonding) {
        return (totalEscrow, totalStaked, totalUnbonding);
    }

    function _add128(uint128 total, uint256 amount) private pure returns (uint128) {
        uint256 t = uint256(total) + amount;
        if (t > type(uint128).max) revert AmountTooLarge();
        return uint128(t);
    }

    function _pull(address from, uint256 amount) private {
        _tokenCall(abi.encodeCall(IERC20.transferFrom, (from, address(this), amount)));
    }

    function _push(address to, uint256 amount) private {
        _tokenCall(abi.encodeCall(IERC20.transfer, (to, amount)));
    }

    /// @dev Accepts tokens that return true or nothing; bubbles up a revert.
    function _tokenCall(bytes memory data) private {
        (bool ok, bytes memory ret) = address(token).call(data);
        if (!ok) {
            assembly ("memory-safe") {
                revert(add(ret, 32), mload(ret))
            }
        }
        if (ret.length != 0 && (ret.length != 32 || abi.decode(ret, (uint256)) != 1)) revert TokenTransferFailed();
    }
}
