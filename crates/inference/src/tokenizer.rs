//! Tokenizers built from GGUF metadata: GPT-2-style byte-level BPE
//! (`tokenizer.ggml.model` = `gpt2`: tokens, merges, token types) and
//! SentencePiece BPE (`llama`: tokens, scores, token types; spaces written
//! `▁`, characters outside the vocabulary as byte tokens `<0xXX>`), read as
//! llama.cpp reads them.

use std::collections::HashMap;

use crate::error::{LlmError, Result};
use crate::gguf::{Gguf, Value};

/// Token type "control" in GGUF (special tokens such as `<|im_start|>`).
const TYPE_CONTROL: i64 = 3;
/// Token type "user defined".
const TYPE_USER: i64 = 4;
/// Token type "byte" (SentencePiece byte fallback, `<0xXX>`).
const TYPE_BYTE: i64 = 6;

/// SentencePiece's space symbol.
const SPM_SPACE: char = '\u{2581}';

/// The SentencePiece part of a tokenizer: merge priorities and byte tokens.
#[derive(Debug, Clone)]
struct Spm {
    scores: Vec<f32>,
    /// Token `<0xXX>` of each byte (`unk` where the vocabulary lacks it).
    byte_tok: [u32; 256],
}

/// A byte-level BPE or SentencePiece tokenizer.
#[derive(Debug, Clone)]
pub struct Tokenizer {
    tokens: Vec<String>,
    /// `Some` for a SentencePiece vocabulary.
    spm: Option<Spm>,
    types: Vec<i64>,
    vocab: HashMap<String, u32>,
    merges: HashMap<(u32, u32), (u32, u32)>,
    /// Token of each byte (`unk` where the vocabulary lacks it).
    byte_tok: [u32; 256],
    char_byte: HashMap<char, u8>,
    /// Special token strings, longest first.
    specials: Vec<(String, u32)>,
    /// Beginning-of-sequence token.
    pub bos: Option<u32>,
    /// End-of-sequence token.
    pub eos: Option<u32>,
    /// Extra end-of-turn token (e.g. `<|im_end|>`), if distinct from `eos`.
    pub eot: Option<u32>,
    /// Whether a BOS token is prepended to prompts.
    pub add_bos: bool,
}

/// The GPT-2 byte → printable-char table.
fn byte_chars() -> [char; 256] {
    let mut table = ['\0'; 256];
    let mut n = 0u32;
    for b in 0..256u32 {
        let printable =
            (0x21..=0x7e).contains(&b) || (0xa1..=0xac).contains(&b) || (0xae..=0xff).contains(&b);
        let c = if printable {
            b
        } else {
            n += 1;
            255 + n
        };
        table[b as usize] = char::from_u32(c).unwrap_or('\0');
    }
    table
}

fn is_letter(c: char) -> bool {
    c.is_alphabetic()
}
fn is_number(c: char) -> bool {
    c.is_numeric()
}
fn is_other(c: char) -> bool {
    !c.is_whitespace() && !is_letter(c) && !is_number(c)
}

/// Split text into pre-tokens: every number character alone, then the GPT-2 rules
/// (contractions, ` ?letters`, ` ?numbers`, ` ?others`, whitespace runs).
pub fn pre_tokenize(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut seg_start = 0;
    for (i, c) in text.char_indices() {
        if is_number(c) {
            gpt2_split(&text[seg_start..i], &mut out);
            out.push(&text[i..i + c.len_utf8()]);
            seg_start = i + c.len_utf8();
        }
    }
    gpt2_split(&text[seg_start..], &mut out);
    out
}

fn gpt2_split<'a>(s: &'a str, out: &mut Vec<&'a str>) {
    let chars: Vec<(usize, char)> = s.char_indices().collect();
    let n = chars.len();
    let off = |k: usize| if k < n { chars[k].0 } else { s.len() };
    let run = |mut k: usize, f: fn(char) -> bool| {
        while k < n && f(chars[k].1) {
            k += 1;
        }
        k
    };
    let mut i = 0;
    while i < n {
        let c = chars[i].1;
        let next = chars.get(i + 1).map(|x| x.1);
        // Contractions.
        if c == '\'' {
            let rest = &s[off(i + 1)..];
            let two = ["re", "ve", "ll"].iter().find(|p| rest.starts_with(**p));
            let one = ['s', 't', 'm', 'd'].iter().find(|p| rest.starts_with(**p));
            let len = if let Some(p) = two {
                Some(p.len())
            } else {
                one.map(|_| 1)
            };
            if let Some(l) = len {
                out.push(&s[off(i)..off(i + 1 + l)]);
                i += 1 + l;
                continue;
            }
        }
        let (class_char, skip) = match next {
            Some(nc) if c == ' ' && !nc.is_whitespace() => (Some(nc), 1),
            _ if !c.is_whitespace() => (Some(c), 0),
            _ => (None, 0),
        };
        if let Some(sc) = class_char {
            let f: fn(char) -> bool = if is_letter(sc) {
                is_letter
            } else if is_number(sc) {
                is_number
            } else {
                is_other
            };
            let end = run(i + skip, f).max(i + 1);
            out.push(&s[off(i)..off(end)]);
            i = end;
            continue;
        }
        // Whitespace run.
        let end = run(i, char::is_whitespace);
        if end == i {
            // Should not happen; consume one char to guarantee progress.
            out.push(&s[off(i)..off(i + 1)]);
            i += 1;
            continue;
        }
        let end = if end < n && end - i > 1 { end - 1 } else { end };
        out.push(&s[off(i)..off(end)]);
        i = end;
    }
}

impl Tokenizer {
    /// Build from GGUF metadata.
    pub fn from_gguf(g: &Gguf) -> Result<Self> {
        let model = g.get_str("tokenizer.ggml.model")?;
        if model != "gpt2" && model != "llama" {
            return Err(LlmError::Tokenizer(format!(
                "tokenizer model {model:?} is not supported (byte-level BPE \"gpt2\" or SentencePiece \"llama\")"
            )));
        }
        let tokens: Vec<String> = g
            .get("tokenizer.ggml.tokens")
            .and_then(Value::as_array)
            .ok_or_else(|| LlmError::Missing("tokenizer.ggml.tokens".into()))?
            .iter()
            .map(|v| v.as_str().map(str::to_owned))
            .collect::<Option<_>>()
            .ok_or_else(|| LlmError::Tokenizer("non-string token".into()))?;
        let types: Vec<i64> = match g.get("tokenizer.ggml.token_type").and_then(Value::as_array) {
            Some(a) => a
                .iter()
                .map(|v| match v {
                    Value::Int(i) => *i,
                    Value::UInt(u) => *u as i64,
                    _ => 1,
                })
                .collect(),
            None => vec![1; tokens.len()],
        };
        let id = |k: &str| g.get(k).and_then(Value::as_u64).map(|v| v as u32);
        let bos = id("tokenizer.ggml.bos_token_id");
        let eos = id("tokenizer.ggml.eos_token_id");
        let add_bos = g
            .get("tokenizer.ggml.add_bos_token")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        if model == "llama" {
            if g.get("tokenizer.ggml.add_space_prefix")
                .and_then(Value::as_bool)
                .unwrap_or(true)
            {
                return Err(LlmError::Tokenizer(
                    "SentencePiece vocabularies that add a space prefix are not supported".into(),
                ));
            }
            let scores: Vec<f32> = g
                .get("tokenizer.ggml.scores")
                .and_then(Value::as_array)
                .ok_or_else(|| LlmError::Missing("tokenizer.ggml.scores".into()))?
                .iter()
                .map(|v| v.as_f64().unwrap_or(0.0) as f32)
                .collect();
            return Self::new_spm(tokens, types, scores, bos, eos, add_bos);
        }
        let merges: Vec<&str> = g
            .get("tokenizer.ggml.merges")
            .and_then(Value::as_array)
            .ok_or_else(|| LlmError::Missing("tokenizer.ggml.merges".into()))?
            .iter()
            .filter_map(Value::as_str)
            .collect();
        Self::new(tokens, types, &merges, bos, eos, add_bos)
    }

    /// Build a byte-level BPE tokenizer from parts.
    pub fn new(
        tokens: Vec<String>,
        types: Vec<i64>,
        merges: &[&str],
        bos: Option<u32>,
        eos: Option<u32>,
        add_bos: bool,
    ) -> Result<Self> {
        let mut t = Self::with_vocab(tokens, types, bos, eos, add_bos)?;
        let vocab = &t.vocab;
        let bc = byte_chars();
        let mut byte_tok = [0u32; 256];
        let mut char_byte = HashMap::new();
        for (b, &c) in bc.iter().enumerate() {
            char_byte.insert(c, b as u8);
            // Some vocabularies omit bytes that never occur in UTF-8 text
            // (0xC0, 0xF5.., some control characters); those map to `unk`.
            byte_tok[b] = vocab.get(&c.to_string()).copied().unwrap_or(u32::MAX);
        }
        let unk = vocab.get("<unk>").copied().unwrap_or(0);
        for t in byte_tok.iter_mut() {
            if *t == u32::MAX {
                *t = unk;
            }
        }
        if byte_tok.iter().filter(|&&t| t == unk).count() > 64 {
            return Err(LlmError::Tokenizer(
                "vocabulary lacks most byte tokens: not a byte-level BPE vocabulary".into(),
            ));
        }
        let mut merge_map = HashMap::with_capacity(merges.len());
        for (rank, m) in merges.iter().enumerate() {
            let Some((a, b)) = m.split_once(' ') else {
                continue;
            };
            if let (Some(&ia), Some(&ib), Some(&im)) =
                (vocab.get(a), vocab.get(b), vocab.get(&format!("{a}{b}")))
            {
                merge_map.entry((ia, ib)).or_insert((rank as u32, im));
            }
        }
        t.merges = merge_map;
        t.byte_tok = byte_tok;
        t.char_byte = char_byte;
        Ok(t)
    }

    /// Build a SentencePiece tokenizer (BPE by score, byte fallback) from parts.
    pub fn new_spm(
        tokens: Vec<String>,
        types: Vec<i64>,
        mut scores: Vec<f32>,
        bos: Option<u32>,
        eos: Option<u32>,
        add_bos: bool,
    ) -> Result<Self> {
        let mut t = Self::with_vocab(tokens, types, bos, eos, add_bos)?;
        scores.resize(t.tokens.len(), 0.0);
        let unk = t.vocab.get("<unk>").copied().unwrap_or(0);
        let byte_tok =
            std::array::from_fn(|b| t.vocab.get(&format!("<0x{b:02X}>")).copied().unwrap_or(unk));
        t.spm = Some(Spm { scores, byte_tok });
        Ok(t)
    }

    /// The parts every vocabulary has: tokens, types, specials, BOS/EOS.
    fn with_vocab(
        tokens: Vec<String>,
        mut types: Vec<i64>,
        bos: Option<u32>,
        eos: Option<u32>,
        add_bos: bool,
    ) -> Result<Self> {
        if tokens.is_empty() || tokens.len() > u32::MAX as usize / 2 {
            return Err(LlmError::Tokenizer("empty or oversized vocabulary".into()));
        }
        types.resize(tokens.len(), 1);
        for t in [bos, eos].into_iter().flatten() {
            if t as usize >= tokens.len() {
                return Err(LlmError::Tokenizer(format!(
                    "special token id {t} out of range"
                )));
            }
        }
        let mut vocab = HashMap::with_capacity(tokens.len());
        for (i, t) in tokens.iter().enumerate() {
            vocab.entry(t.clone()).or_insert(i as u32);
        }
        let mut specials: Vec<(String, u32)> = tokens
            .iter()
            .enumerate()
            .filter(|(i, t)| (types[*i] == TYPE_CONTROL || types[*i] == TYPE_USER) && !t.is_empty())
            .map(|(i, t)| (t.clone(), i as u32))
            .collect();
        specials.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then(a.1.cmp(&b.1)));
        let eot = ["<|im_end|>", "<|eot_id|>", "<end_of_turn>"]
            .iter()
            .find_map(|s| vocab.get(*s))
            .copied()
            .filter(|&t| Some(t) != eos);
        Ok(Tokenizer {
            tokens,
            spm: None,
            types,
            vocab,
            merges: HashMap::new(),
            byte_tok: [0; 256],
            char_byte: HashMap::new(),
            specials,
            bos,
            eos,
            eot,
            add_bos,
        })
    }

    /// Vocabulary size.
    pub fn vocab_size(&self) -> usize {
        self.tokens.len()
    }

    /// Token id of an exact token string.
    pub fn token_id(&self, s: &str) -> Option<u32> {
        self.vocab.get(s).copied()
    }

    /// Whether `id` ends generation (EOS or end-of-turn).
    pub fn is_end(&self, id: u32) -> bool {
        Some(id) == self.eos || Some(id) == self.eot
    }

    /// Whether a token is a control token.
    pub fn is_control(&self, id: u32) -> bool {
        self.types.get(id as usize) == Some(&TYPE_CONTROL)
    }

    /// Encode text. With `parse_special`, special-token strings in the text
    /// become their token ids; otherwise they are encoded as plain text.
    pub fn encode(&self, text: &str, parse_special: bool) -> Vec<u32> {
        let mut out = Vec::new();
        if self.add_bos {
            if let Some(b) = self.bos {
                out.push(b);
            }
        }
        if !parse_special || self.specials.is_empty() {
            self.encode_plain(text, &mut out);
            return out;
        }
        let mut rest = text;
        let mut plain_start = 0usize;
        let mut i = 0usize;
        while i < rest.len() {
            let hit = self
                .specials
                .iter()
                .find(|(s, _)| rest[i..].starts_with(s.as_str()));
            if let Some((s, id)) = hit {
                self.encode_plain(&rest[plain_start..i], &mut out);
                out.push(*id);
                rest = &rest[i + s.len()..];
                i = 0;
                plain_start = 0;
            } else {
                i += rest[i..].chars().next().map_or(1, char::len_utf8);
            }
        }
        self.encode_plain(&rest[plain_start..], &mut out);
        out
    }

    fn encode_plain(&self, text: &str, out: &mut Vec<u32>) {
        if let Some(spm) = &self.spm {
            return self.encode_spm(spm, text, out);
        }
        for piece in pre_tokenize(text) {
            if let Some(&id) = self.vocab.get(&self.byte_string(piece)) {
                if !self.is_control(id) {
                    out.push(id);
                    continue;
                }
            }
            let mut syms: Vec<u32> = piece.bytes().map(|b| self.byte_tok[b as usize]).collect();
            loop {
                let mut best: Option<(u32, usize, u32)> = None;
                for k in 0..syms.len().saturating_sub(1) {
                    if let Some(&(rank, merged)) = self.merges.get(&(syms[k], syms[k + 1])) {
                        if best.is_none_or(|b| rank < b.0) {
                            best = Some((rank, k, merged));
                        }
                    }
                }
                let Some((_, k, merged)) = best else { break };
                syms[k] = merged;
                syms.remove(k + 1);
            }
            out.extend_from_slice(&syms);
        }
    }

    /// SentencePiece BPE: spaces become `▁`, the text splits into
    /// characters, and the adjacent pair whose concatenation is a token with
    /// the highest score (leftmost on ties) merges until none is left;
    /// pieces outside the vocabulary become their bytes' tokens.
    fn encode_spm(&self, spm: &Spm, text: &str, out: &mut Vec<u32>) {
        use std::cmp::Reverse;
        use std::collections::BinaryHeap;
        if text.is_empty() {
            return;
        }
        let text = text.replace(' ', SPM_SPACE.encode_utf8(&mut [0; 4]));
        // Symbols as byte ranges of `text`, linked to their neighbours.
        let mut sym: Vec<(usize, usize)> = text
            .char_indices()
            .map(|(i, c)| (i, i + c.len_utf8()))
            .collect();
        let n = sym.len();
        let mut prev: Vec<usize> = (0..n).map(|i| i.wrapping_sub(1)).collect();
        let mut next: Vec<usize> = (1..=n).collect();
        let mut alive = vec![true; n];
        // (score, left symbol (leftmost first on ties), right symbol, merged
        // length): a pair is stale when either side changed since it was queued.
        let mut heap = BinaryHeap::new();
        let push = |heap: &mut BinaryHeap<_>, sym: &[(usize, usize)], l: usize, r: usize| {
            let piece = &text[sym[l].0..sym[r].1];
            if let Some(&id) = self.vocab.get(piece) {
                let score = spm.scores[id as usize];
                heap.push((OrdF32(score), Reverse(l), r, piece.len()));
            }
        };
        for i in 1..n {
            push(&mut heap, &sym, i - 1, i);
        }
        while let Some((_, Reverse(l), r, len)) = heap.pop() {
            if !alive[l] || !alive[r] || next[l] != r || sym[r].1 - sym[l].0 != len {
                continue;
            }
            sym[l].1 = sym[r].1;
            alive[r] = false;
            next[l] = next[r];
            if next[r] < n {
                prev[next[r]] = l;
            }
            if prev[l] < n {
                push(&mut heap, &sym, prev[l], l);
            }
            if next[l] < n {
                push(&mut heap, &sym, l, next[l]);
            }
        }
        let mut i = 0;
        while i < n {
            let piece = &text[sym[i].0..sym[i].1];
            match self.vocab.get(piece) {
                Some(&id) => out.push(id),
                None => out.extend(piece.bytes().map(|b| spm.byte_tok[b as usize])),
            }
            i = next[i];
        }
    }

    fn byte_string(&self, piece: &str) -> String {
        let bc = byte_chars();
        piece.bytes().map(|b| bc[b as usize]).collect()
    }

    /// The bytes of one token (control tokens give their text only if `special`).
    pub fn token_bytes(&self, id: u32, special: bool) -> Result<Vec<u8>> {
        let t = self
            .tokens
            .get(id as usize)
            .ok_or_else(|| LlmError::Tokenizer(format!("token id {id} out of range")))?;
        let ty = self.types[id as usize];
        if ty == TYPE_CONTROL || ty == TYPE_USER {
            return Ok(if special || ty == TYPE_USER {
                t.as_bytes().to_vec()
            } else {
                Vec::new()
            });
        }
        if self.spm.is_some() {
            if ty == TYPE_BYTE {
                let hex = t.strip_prefix("<0x").and_then(|h| h.strip_suffix('>'));
                if let Some(b) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    return Ok(vec![b]);
                }
            }
            return Ok(t.replace(SPM_SPACE, " ").into_bytes());
        }
        let mut out = Vec::with_capacity(t.len());
        for c in t.chars() {
            match self.char_byte.get(&c) {
                Some(&b) => out.push(b),
                None => {
                    let mut buf = [0u8; 4];
                    out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                }
            }
        }
        Ok(out)
    }

    /// Decode tokens to bytes (control tokens omitted unless `special`).
    pub fn decode_bytes(&self, ids: &[u32], special: bool) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        for &id in ids {
            out.extend(self.token_bytes(id, special)?);
        }
        Ok(out)
    }

    /// Decode tokens to text (invalid UTF-8 replaced).
    pub fn decode(&self, ids: &[u32], special: bool) -> Result<String> {
        Ok(String::from_utf8_lossy(&self.decode_bytes(ids, special)?).into_owned())
    }
}

/// An f32 ordered by [`f32::total_cmp`] (merge scores in a heap).
#[derive(Debug, Clone, Copy, PartialEq)]
struct OrdF32(f32);

impl Eq for OrdF32 {}

impl PartialOrd for OrdF32 {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for OrdF32 {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&other.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A SentencePiece vocabulary: `<unk>`, BOS, EOS, the 256 byte tokens,
    /// then pieces with scores.
    fn spm(pieces: &[(&str, f32)]) -> Tokenizer {
        let mut tokens = vec!["<unk>".to_string(), "<bos>".into(), "<eos>".into()];
        let mut types = vec![2, TYPE_CONTROL, TYPE_CONTROL];
        let mut scores = vec![0.0; 3];
        for b in 0..256 {
            tokens.push(format!("<0x{b:02X}>"));
            types.push(TYPE_BYTE);
            scores.push(0.0);
        }
        for (p, sc) in pieces {
            tokens.push(p.to_string());
            types.push(1);
            scores.push(*sc);
        }
        Tokenizer::new_spm(tokens, types, scores, Some(1), Some(2), true).expect("spm")
    }

    #[test]
    fn sentencepiece_merges_by_score_and_falls_back_to_bytes() {
        let t = spm(&[
            ("\u{2581}", -5.0),
            ("a", -4.0),
            ("b", -4.0),
            ("ab", -1.0),
            ("\u{2581}a", -2.0),
            ("\u{2581}ab", -1.5),
            ("bb", -3.0),
        ]);
        let id = |s: &str| t.token_id(s).expect("piece");
        // "ab▁ab": `ab` (best score, leftmost) twice, then `▁` + `ab` → `▁ab`.
        assert_eq!(t.encode("ab ab", false), [1, id("ab"), id("\u{2581}ab")]);
        // Equal scores merge leftmost first.
        assert_eq!(t.encode("bbb", false), [1, id("bb"), id("b")]);
        // Characters outside the vocabulary become their UTF-8 bytes.
        assert_eq!(t.encode("é", false), [1, 3 + 0xc3, 3 + 0xa9]);
        for s in ["ab ab", "é b", " a  b ", ""] {
            let ids = t.encode(s, false);
            assert_eq!(t.decode(&ids, false).expect("decode"), s);
        }
        assert_eq!(t.decode(&[1, id("ab")], true).expect("decode"), "<bos>ab");
    }

    #[test]
    fn pre_tokenizer_follows_gpt2_rules() {
        assert_eq!(
            pre_tokenize("Hello world, it's 2024!\n\n  ok"),
            vec!["Hello", " world", ",", " it", "'s", " ", "2", "0", "2", "4", "!", "\n\n ", " ok"]
        );
        assert_eq!(pre_tokenize("a  b"), vec!["a", " ", " b"]);
        assert_eq!(pre_tokenize("x\ny "), vec!["x", "\n", "y", " "]);
        assert_eq!(pre_tokenize(""), Vec::<&str>::new());
        assert_eq!(pre_tokenize("héllo wörld"), vec!["héllo", " wörld"]);
    }

    #[test]
    fn pre_tokenizer_covers_input() {
        for s in [
            "  leading",
            "trailing  ",
            "\t\tx",
            "a'b'reve",
            "日本語 テキスト",
            "fn main() { }",
            " ' ",
        ] {
            let joined: String = pre_tokenize(s).concat();
            assert_eq!(joined, s);
        }
    }
}
