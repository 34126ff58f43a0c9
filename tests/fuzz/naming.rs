//! The name builders: `plain_pv_name`, `hashed_pv_name` and
//! `node_label_value` always give valid, stable names; `assign_pv_names`
//! never gives two devices of one scan the same name and follows the
//! collision rule (a holder keeps its plain name, every other member is
//! hashed).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use local_pv_provisioner::objects::naming::{
    MAX_LABEL_VALUE_LEN, MAX_SUBDOMAIN_LEN, NameRequest, assign_pv_names, hashed_pv_name,
    is_dns1123_subdomain, is_label_value, node_label_value, plain_pv_name, upstream_pv_name,
};
use proptest::collection::{btree_set, vec};
use proptest::prelude::*;

use crate::config;
use crate::oracles::{valid_label_value, valid_subdomain};
use crate::strategies::{colliding_entries, entry_name, node_name, text};

proptest! {
    #![proptest_config(config())]

    #[test]
    fn pv_names_are_always_valid_and_stable(node in node_name(), entry in entry_name()) {
        let lowered = upstream_pv_name(&node, &entry).to_ascii_lowercase();
        match plain_pv_name(&node, &entry) {
            Some(plain) => {
                prop_assert!(valid_subdomain(&plain), "{}", plain);
                prop_assert_eq!(&plain, &lowered);
            }
            None => prop_assert!(!valid_subdomain(&lowered), "{} was valid", lowered),
        }
        let hashed = hashed_pv_name(&node, &entry);
        prop_assert!(valid_subdomain(&hashed), "{}", hashed);
        prop_assert!(hashed.len() <= MAX_SUBDOMAIN_LEN);
        prop_assert!(hashed.starts_with("local"), "{}", hashed);
        let (_, suffix) = hashed.rsplit_once('-').expect("a hash suffix");
        prop_assert!(suffix.len() == 8 && suffix.bytes().all(|b| b.is_ascii_hexdigit()), "{}", hashed);
        prop_assert_eq!(&hashed, &hashed_pv_name(&node, &entry), "stable");
        // The crate's validator agrees with Kubernetes' expression.
        prop_assert_eq!(is_dns1123_subdomain(&lowered), valid_subdomain(&lowered));
    }

    #[test]
    fn any_text_gives_valid_names(node in text(), entry in text()) {
        let name = plain_pv_name(&node, &entry).unwrap_or_else(|| hashed_pv_name(&node, &entry));
        prop_assert!(valid_subdomain(&name), "{:?} {:?} -> {}", node, entry, name);
    }

    #[test]
    fn node_label_values_are_always_valid(node in prop_oneof![node_name(), text(), "[-_.]{60,70}".boxed()]) {
        let value = node_label_value(&node);
        prop_assert!(valid_label_value(&value), "{:?} -> {:?}", node, value);
        prop_assert!(value.len() <= MAX_LABEL_VALUE_LEN);
        prop_assert_eq!(&value, &node_label_value(&node), "stable");
        if valid_label_value(&node) {
            prop_assert_eq!(&value, &node);
        } else {
            prop_assert_ne!(&value, &node);
            prop_assert!(!value.is_empty(), "an invalid name never maps to the empty value");
        }
        prop_assert_eq!(is_label_value(&node), valid_label_value(&node));
    }

    #[test]
    fn no_two_devices_of_a_scan_share_a_name(
        node in node_name(),
        entries in prop_oneof![colliding_entries(), btree_set(entry_name(), 1..12)],
        holders in vec(any::<prop::sample::Index>(), 0..3),
    ) {
        let entries: Vec<&str> = entries.iter().map(String::as_str).collect();
        // Existing PVs holding plain names: some by entries of this scan.
        let existing: HashMap<String, String> = holders
            .iter()
            .filter_map(|index| {
                let entry = index.get(&entries);
                plain_pv_name(&node, entry).map(|plain| (plain, entry.to_string()))
            })
            .collect();
        let requests = entries.iter().map(|entry| NameRequest { key: entry, class: "default", entry });
        let assignment = assign_pv_names(&node, requests, &existing);
        // Every entry exactly once, named or reported.
        let named: BTreeSet<&str> = assignment.names.keys().map(String::as_str).collect();
        let unnamed: BTreeSet<&str> = assignment.unnamed.iter().map(String::as_str).collect();
        prop_assert!(named.is_disjoint(&unnamed));
        prop_assert_eq!(named.len() + unnamed.len(), entries.len());
        // Distinct, valid names, each the entry's plain or hashed name.
        let distinct: HashSet<&String> = assignment.names.values().collect();
        prop_assert_eq!(distinct.len(), assignment.names.len());
        let mut groups: BTreeMap<String, BTreeSet<&str>> = BTreeMap::new();
        for entry in &entries {
            if let Some(plain) = plain_pv_name(&node, entry) {
                groups.entry(plain).or_default().insert(entry);
            }
        }
        for (entry, name) in &assignment.names {
            prop_assert!(valid_subdomain(name), "{}", name);
            let plain = plain_pv_name(&node, entry);
            let shared = plain.as_ref().is_some_and(|plain| groups[plain].len() > 1);
            let holder = plain.as_ref().is_some_and(|plain| existing.get(plain) == Some(entry));
            if plain.is_some() && (!shared || holder) {
                prop_assert_eq!(Some(name), plain.as_ref(), "{} keeps its plain name", entry);
            } else {
                prop_assert_eq!(name, &hashed_pv_name(&node, entry), "{} is hashed", entry);
            }
        }
        // Collisions: exactly the groups sharing a plain name.
        let reported: BTreeSet<BTreeSet<&str>> = assignment
            .collisions
            .iter()
            .map(|group| group.iter().map(String::as_str).collect())
            .collect();
        let expected: BTreeSet<BTreeSet<&str>> =
            groups.into_values().filter(|group| group.len() > 1).collect();
        prop_assert_eq!(reported, expected);
    }
}
