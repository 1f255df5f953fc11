//! Checks that protect tract from malformed graphs it does not validate
//! itself. tract 0.23.9 walks tree ensembles with unchecked indexing, so a
//! bad node or class index is undefined behaviour and a cycle is an endless
//! loop; every tree ensemble is therefore checked here before tract sees it.

use std::collections::BTreeMap;

use tract_onnx::pb;

/// Operators validated by [`check_tree_ensemble`].
pub(crate) const TREE_ENSEMBLE_OPS: &[&str] = &["TreeEnsembleClassifier", "TreeEnsembleRegressor"];

fn attr<'a>(node: &'a pb::NodeProto, name: &str) -> Option<&'a pb::AttributeProto> {
    node.attribute.iter().find(|a| a.name == name)
}

fn ints<'a>(node: &'a pb::NodeProto, name: &str) -> &'a [i64] {
    attr(node, name).map(|a| a.ints.as_slice()).unwrap_or(&[])
}

fn count(node: &pb::NodeProto, name: &str) -> usize {
    attr(node, name)
        .map(|a| a.ints.len() + a.floats.len() + a.strings.len())
        .unwrap_or(0)
}

/// Node modes tract evaluates as written. `BRANCH_GTE` is refused: tract
/// 0.23.9 parses it but decodes it back as a leaf, so it would silently
/// compute something else.
const BRANCH_MODES: &[&str] = &[
    "BRANCH_LEQ",
    "BRANCH_LT",
    "BRANCH_GT",
    "BRANCH_EQ",
    "BRANCH_NEQ",
];

/// Validates a `TreeEnsembleClassifier` / `TreeEnsembleRegressor` node:
/// consistent attribute lengths, every tree's node ids exactly `0..k`,
/// children inside their tree, no cycle, leaf entries on leaf nodes and
/// class (target) ids below the number of classes (targets).
pub(crate) fn check_tree_ensemble(node: &pb::NodeProto) -> Result<(), String> {
    let classifier = node.op_type == "TreeEnsembleClassifier";
    let n = count(node, "nodes_featureids");
    if n == 0 {
        return Err("no tree nodes (nodes_featureids is empty)".into());
    }
    for name in [
        "nodes_treeids",
        "nodes_nodeids",
        "nodes_modes",
        "nodes_truenodeids",
        "nodes_falsenodeids",
        "nodes_values",
    ] {
        if count(node, name) != n {
            return Err(format!(
                "{name} has {} entries, nodes_featureids has {n}",
                count(node, name)
            ));
        }
    }
    let tree_ids = ints(node, "nodes_treeids");
    let node_ids = ints(node, "nodes_nodeids");
    let features = ints(node, "nodes_featureids");
    let true_ids = ints(node, "nodes_truenodeids");
    let false_ids = ints(node, "nodes_falsenodeids");
    let modes: Vec<String> = attr(node, "nodes_modes")
        .map(|a| {
            a.strings
                .iter()
                .map(|s| String::from_utf8_lossy(s).into_owned())
                .collect()
        })
        .unwrap_or_default();
    let max_index = i64::from(i32::MAX);
    for (name, values) in [
        ("nodes_treeids", tree_ids),
        ("nodes_nodeids", node_ids),
        ("nodes_featureids", features),
        ("nodes_truenodeids", true_ids),
        ("nodes_falsenodeids", false_ids),
    ] {
        if let Some(v) = values.iter().find(|&&v| !(0..max_index).contains(&v)) {
            return Err(format!("{name} holds the out-of-range index {v}"));
        }
    }

    // tree id -> node id -> position in the attribute arrays.
    let mut trees: BTreeMap<i64, BTreeMap<i64, usize>> = BTreeMap::new();
    for i in 0..n {
        if trees
            .entry(tree_ids[i])
            .or_default()
            .insert(node_ids[i], i)
            .is_some()
        {
            return Err(format!(
                "tree {} lists node {} twice",
                tree_ids[i], node_ids[i]
            ));
        }
    }
    for (tree, nodes) in &trees {
        let k = nodes.len() as i64;
        if nodes.keys().copied().ne(0..k) {
            return Err(format!(
                "the node ids of tree {tree} are not exactly 0..{k}"
            ));
        }
        for &i in nodes.values() {
            let mode = modes[i].as_str();
            if mode == "LEAF" {
                continue;
            }
            if !BRANCH_MODES.contains(&mode) {
                return Err(format!(
                    "tree {tree} node {}: mode {mode:?} is not supported (tract 0.23.9 \
                     evaluates only LEAF, {})",
                    node_ids[i],
                    BRANCH_MODES.join(", ")
                ));
            }
            for child in [true_ids[i], false_ids[i]] {
                if child >= k {
                    return Err(format!(
                        "tree {tree} node {} points to node {child}, outside the tree (0..{k})",
                        node_ids[i]
                    ));
                }
            }
        }
        check_acyclic(*tree, nodes, &modes, true_ids, false_ids)?;
    }

    let prefix = if classifier { "class" } else { "target" };
    let outputs = if classifier {
        count(node, "classlabels_int64s").max(count(node, "classlabels_strings"))
    } else {
        attr(node, "n_targets")
            .map(|a| a.i)
            .unwrap_or(0)
            .clamp(0, max_index) as usize
    };
    if outputs == 0 {
        return Err(if classifier {
            "no class labels"
        } else {
            "n_targets is missing or 0"
        }
        .into());
    }
    let leaf_tree = ints(node, &format!("{prefix}_treeids"));
    let leaf_node = ints(node, &format!("{prefix}_nodeids"));
    let leaf_ids = ints(node, &format!("{prefix}_ids"));
    let m = leaf_ids.len();
    if m == 0 {
        return Err(format!("no leaf weights ({prefix}_ids is empty)"));
    }
    for name in ["treeids", "nodeids", "weights"] {
        let name = format!("{prefix}_{name}");
        if count(node, &name) != m {
            return Err(format!(
                "{name} has {} entries, {prefix}_ids has {m}",
                count(node, &name)
            ));
        }
    }
    for j in 0..m {
        let target = trees.get(&leaf_tree[j]).and_then(|t| t.get(&leaf_node[j]));
        match target {
            Some(&i) if modes[i] == "LEAF" => {}
            _ => {
                return Err(format!(
                    "leaf weight {j} refers to tree {} node {}, which is not a leaf",
                    leaf_tree[j], leaf_node[j]
                ))
            }
        }
        if !(0..outputs as i64).contains(&leaf_ids[j]) {
            return Err(format!(
                "leaf weight {j} is for {prefix} {}, but there are {outputs}",
                leaf_ids[j]
            ));
        }
    }
    Ok(())
}

/// Refuses a cycle among a tree's branch nodes (an endless walk in tract).
fn check_acyclic(
    tree: i64,
    nodes: &BTreeMap<i64, usize>,
    modes: &[String],
    true_ids: &[i64],
    false_ids: &[i64],
) -> Result<(), String> {
    // 0 = unvisited, 1 = on the current path, 2 = done.
    let mut state = vec![0u8; nodes.len()];
    let children = |id: i64| -> Vec<i64> {
        match nodes.get(&id) {
            Some(&i) if modes[i] != "LEAF" => vec![true_ids[i], false_ids[i]],
            _ => Vec::new(),
        }
    };
    for start in 0..nodes.len() as i64 {
        if state[start as usize] != 0 {
            continue;
        }
        let mut stack: Vec<(i64, Vec<i64>)> = vec![(start, children(start))];
        state[start as usize] = 1;
        while let Some((id, pending)) = stack.last_mut() {
            match pending.pop() {
                Some(child) => match state[child as usize] {
                    0 => {
                        state[child as usize] = 1;
                        let next = children(child);
                        stack.push((child, next));
                    }
                    1 => return Err(format!("tree {tree} has a cycle through node {child}")),
                    _ => {}
                },
                None => {
                    state[*id as usize] = 2;
                    stack.pop();
                }
            }
        }
    }
    Ok(())
}
