//! Unit tests of the wipe's guards.

use super::*;

#[test]
fn guard_names_are_distinct() {
    let names: std::collections::HashSet<_> = Guard::ALL.iter().map(|g| g.name()).collect();
    assert_eq!(names.len(), Guard::ALL.len());
}
