use super::*;

fn at(p: &Positions, path: &str) -> Option<(usize, usize)> {
    p.get(path).map(|pos| (pos.line, pos.column))
}

const DOC: &str = "\
listen: 127.0.0.1:8080
upstreams:
  backend:
    endpoints: [\"a:1\", \"b:2\"]
routes:
  - upstream: backend
    match:
      path_prefix: /api
  - {upstream: other, filters: [x, y]}
  - plain
";

#[test]
fn keys_are_placed_at_the_key_with_1_based_columns() {
    let p = Positions::index(DOC);
    assert_eq!(at(&p, "listen"), Some((1, 1)));
    assert_eq!(at(&p, "upstreams.backend"), Some((3, 3)));
    assert_eq!(at(&p, "upstreams.backend.endpoints"), Some((4, 5)));
    assert_eq!(at(&p, "routes[0].match.path_prefix"), Some((8, 7)));
}

#[test]
fn list_items_are_placed_at_the_item() {
    let p = Positions::index(DOC);
    assert_eq!(at(&p, "upstreams.backend.endpoints[0]"), Some((4, 17)));
    assert_eq!(at(&p, "upstreams.backend.endpoints[1]"), Some((4, 24)));
    // A block mapping item starts at its first key, a flow one at `{`.
    assert_eq!(at(&p, "routes[0]"), Some((6, 5)));
    assert_eq!(at(&p, "routes[1]"), Some((9, 5)));
    assert_eq!(at(&p, "routes[1].filters[1]"), Some((9, 36)));
    assert_eq!(at(&p, "routes[2]"), Some((10, 5)));
    assert_eq!(at(&p, ""), Some((1, 1)));
}

#[test]
fn repeated_keys_keep_every_occurrence() {
    let p = Positions::index("a: 1\nb: 2\na: 3\n");
    assert_eq!(p.nth("a", 0).map(|x| x.line), Some(1));
    assert_eq!(p.nth("a", 1).map(|x| x.line), Some(3));
    assert_eq!(p.nth("a", 2), None);
}

#[test]
fn nearest_falls_back_to_the_closest_indexed_parent() {
    let p = Positions::index("base: &b {x: 1}\nroutes:\n  - *b\n");
    assert!(p.contains("routes[0]"));
    assert!(!p.contains("routes[0].x"));
    assert_eq!(
        p.nearest("routes[0].x").map(|x| (x.line, x.column)),
        Some((3, 5))
    );
    assert_eq!(p.nearest("nope.deeper[3]").map(|x| x.line), Some(1));
}

#[test]
fn complex_keys_do_not_shift_later_entries() {
    let p = Positions::index("? [a, b]\n: 1\nafter: 2\n");
    assert_eq!(at(&p, "after"), Some((3, 1)));
}

#[test]
fn broken_documents_keep_what_was_read() {
    let p = Positions::index("a: 1\nb: [\n");
    assert_eq!(at(&p, "a"), Some((1, 1)));
}

#[test]
fn columns_count_characters_not_bytes() {
    let p = Positions::index("é: {ü: 1, k: 2}\n");
    assert_eq!(at(&p, "é.k"), Some((1, 11)));
}

#[test]
fn parent_strips_one_segment() {
    assert_eq!(parent("a.b[2]"), "a.b");
    assert_eq!(parent("a.b"), "a");
    assert_eq!(parent("a"), "");
    assert_eq!(parent("[0]"), "");
}
