//! The pipeline graph: components are nodes, `inputs` and `depends_on` are edges from a
//! component to what it needs. Pure functions over indices, so they are easy to test.

/// Every dependency cycle once, each as the components along it (`a` needs `b` needs `a`
/// gives `[a, b]`), starting from its lowest index.
pub fn cycles(edges: &[Vec<usize>]) -> Vec<Vec<usize>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        OnPath,
        Done,
    }
    let n = edges.len();
    let mut mark = vec![Mark::New; n];
    let mut found: Vec<Vec<usize>> = Vec::new();
    for start in 0..n {
        if mark[start] != Mark::New {
            continue;
        }
        // Iterative DFS: (node, next edge index).
        let mut stack: Vec<(usize, usize)> = vec![(start, 0)];
        mark[start] = Mark::OnPath;
        while let Some(&mut (node, ref mut next)) = stack.last_mut() {
            if let Some(&to) = edges[node].get(*next) {
                *next += 1;
                match mark[to] {
                    Mark::New => {
                        mark[to] = Mark::OnPath;
                        stack.push((to, 0));
                    }
                    Mark::OnPath => {
                        let from = stack.iter().position(|(v, _)| *v == to).unwrap_or(0);
                        let mut cycle: Vec<usize> = stack[from..].iter().map(|(v, _)| *v).collect();
                        let min = cycle
                            .iter()
                            .enumerate()
                            .min_by_key(|(_, v)| **v)
                            .map_or(0, |(i, _)| i);
                        cycle.rotate_left(min);
                        if !found.contains(&cycle) {
                            found.push(cycle);
                        }
                    }
                    Mark::Done => {}
                }
            } else {
                mark[node] = Mark::Done;
                stack.pop();
            }
        }
    }
    found
}

/// A start order in which everything comes after what it needs; among components that are
/// free to go, file order. Components on a cycle are left out (the cycle is an error anyway).
pub fn order(edges: &[Vec<usize>]) -> Vec<usize> {
    let n = edges.len();
    let mut waiting: Vec<usize> = edges
        .iter()
        .map(|deps| {
            let mut d = deps.clone();
            d.sort_unstable();
            d.dedup();
            d.len()
        })
        .collect();
    let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); n];
    for (i, deps) in edges.iter().enumerate() {
        let mut d = deps.clone();
        d.sort_unstable();
        d.dedup();
        for j in d {
            dependents[j].push(i);
        }
    }
    let mut ready: std::collections::BTreeSet<usize> =
        (0..n).filter(|i| waiting[*i] == 0).collect();
    let mut out = Vec::with_capacity(n);
    while let Some(i) = ready.pop_first() {
        out.push(i);
        for &d in &dependents[i] {
            waiting[d] -= 1;
            if waiting[d] == 0 {
                ready.insert(d);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_each_cycle_once() {
        // 0 → 1 → 2 → 0, 3 → 3, 4 → 0 (not on a cycle)
        let edges = vec![vec![1], vec![2], vec![0], vec![3], vec![0]];
        assert_eq!(cycles(&edges), vec![vec![0, 1, 2], vec![3]]);
    }

    #[test]
    fn acyclic_graph_has_no_cycles() {
        let edges = vec![vec![], vec![0], vec![0, 1]];
        assert!(cycles(&edges).is_empty());
    }

    #[test]
    fn order_puts_dependencies_first_and_keeps_file_order() {
        // sink(0) needs proc(2), proc(2) needs src(1); 3 is free.
        let edges = vec![vec![2], vec![], vec![1, 1], vec![]];
        assert_eq!(order(&edges), vec![1, 2, 0, 3]);
    }
}
