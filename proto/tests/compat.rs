//! Breaking-change check for the wire contract, in the spirit of `buf breaking`.
//!
//! `lanewatch/v1/wire.lock` lists every message, field, enum value and rpc of the contract as
//! released. Agents in the field speak old versions for years, so against that list:
//! - a field may not change number, name, type, label or oneof, and may be removed only when its
//!   number and name are reserved;
//! - an enum value, a message or an rpc may never be removed or changed;
//! - a reservation may never be lifted.
//!
//! Additions are fine but must be recorded (`LANEWATCH_BLESS=1`), so that a later removal of
//! them is caught too.

mod support;

use prost_types::field_descriptor_proto::{Label, Type};
use prost_types::{DescriptorProto, FileDescriptorSet};
use std::collections::BTreeSet;

#[test]
fn contract_has_no_breaking_change_against_the_lock() {
    let current = lock_lines(&support::descriptor_set());
    let lock_path = support::proto_root().join("lanewatch/v1/wire.lock");
    let locked: BTreeSet<String> = std::fs::read_to_string(&lock_path)
        .expect("lanewatch/v1/wire.lock exists")
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(str::to_owned)
        .collect();

    let breaking = breaking_changes(&locked, &current);
    assert!(
        breaking.is_empty(),
        "breaking changes to lanewatch.v1 (old agents would break):\n  {}",
        breaking.join("\n  ")
    );

    let added: Vec<_> = current.difference(&locked).cloned().collect();
    let dropped_reserved: Vec<_> = locked.difference(&current).cloned().collect();
    if added.is_empty() && dropped_reserved.is_empty() {
        return;
    }
    if support::bless() {
        let mut text = String::from(
            "# lanewatch.v1 as released; checked by proto/tests/compat.rs. Regenerate with\n\
             # LANEWATCH_BLESS=1 cargo test -p lanewatch-proto --test compat\n",
        );
        for line in &current {
            text.push_str(line);
            text.push('\n');
        }
        std::fs::write(&lock_path, text).unwrap();
        return;
    }
    panic!(
        "lanewatch/v1/wire.lock does not record the current contract; additions:\n  {}\n\
         removed (reserved) entries:\n  {}\nrecord them with \
         `LANEWATCH_BLESS=1 cargo test -p lanewatch-proto --test compat`",
        added.join("\n  "),
        dropped_reserved.join("\n  ")
    );
}

#[test]
fn the_check_catches_renumbering_removal_and_unreserving() {
    let locked: BTreeSet<String> = [
        "field lanewatch.v1.Hello 2 agent_id string optional",
        "enum lanewatch.v1.Health 2 HEALTH_DEGRADED",
        "reserved lanewatch.v1.AgentMessage 1",
        "field lanewatch.v1.Hello 3 site_id string optional",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect();
    // agent_id renumbered to 7, HEALTH_DEGRADED removed, reservation lifted, site_id removed
    // but properly reserved.
    let current: BTreeSet<String> = [
        "field lanewatch.v1.Hello 7 agent_id string optional",
        "reserved lanewatch.v1.Hello 3",
        "reserved-name lanewatch.v1.Hello site_id",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect();
    let breaking = breaking_changes(&locked, &current);
    assert_eq!(breaking.len(), 3, "{breaking:#?}");
    assert!(breaking.iter().any(|b| b.contains("agent_id")));
    assert!(breaking.iter().any(|b| b.contains("HEALTH_DEGRADED")));
    assert!(breaking.iter().any(|b| b.contains("reserved lanewatch.v1.AgentMessage 1")));
}

/// Lock entries that are gone from the current contract without a legal reason.
fn breaking_changes(locked: &BTreeSet<String>, current: &BTreeSet<String>) -> Vec<String> {
    let mut out = Vec::new();
    for line in locked.difference(current) {
        let parts: Vec<&str> = line.split(' ').collect();
        if parts[0] == "field" {
            let (message, number, name) = (parts[1], parts[2], parts[3]);
            let number_reserved = current.contains(&format!("reserved {message} {number}"));
            let name_reserved = current.contains(&format!("reserved-name {message} {name}"));
            if number_reserved && name_reserved {
                continue;
            }
            out.push(format!(
                "`{line}` changed or removed (a removed field must reserve its number and name)"
            ));
        } else {
            out.push(format!("`{line}` changed or removed"));
        }
    }
    out
}

fn lock_lines(fds: &FileDescriptorSet) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for file in &fds.file {
        let package = file.package();
        if !package.starts_with("lanewatch.") {
            continue;
        }
        for message in &file.message_type {
            message_lines(&format!("{package}.{}", message.name()), message, &mut out);
        }
        for e in &file.enum_type {
            for v in &e.value {
                out.insert(format!("enum {package}.{} {} {}", e.name(), v.number(), v.name()));
            }
        }
        for service in &file.service {
            for m in &service.method {
                out.insert(format!(
                    "rpc {package}.{}.{} {}{} -> {}{}",
                    service.name(),
                    m.name(),
                    if m.client_streaming() { "stream " } else { "" },
                    m.input_type(),
                    if m.server_streaming() { "stream " } else { "" },
                    m.output_type(),
                ));
            }
        }
    }
    out
}

fn message_lines(full: &str, message: &DescriptorProto, out: &mut BTreeSet<String>) {
    out.insert(format!("message {full}"));
    for f in &message.field {
        let ty = match f.r#type() {
            Type::Message | Type::Enum => f.type_name().to_owned(),
            other => other.as_str_name().trim_start_matches("TYPE_").to_lowercase(),
        };
        let label = match f.label() {
            Label::Repeated => "repeated",
            Label::Required => "required",
            Label::Optional if f.proto3_optional() => "explicit",
            Label::Optional => "optional",
        };
        let oneof = match f.oneof_index {
            Some(i) if !f.proto3_optional() => {
                format!(" oneof={}", message.oneof_decl[i as usize].name())
            }
            _ => String::new(),
        };
        out.insert(format!("field {full} {} {} {ty} {label}{oneof}", f.number(), f.name()));
    }
    for r in &message.reserved_range {
        for n in r.start()..r.end() {
            out.insert(format!("reserved {full} {n}"));
        }
    }
    for n in &message.reserved_name {
        out.insert(format!("reserved-name {full} {n}"));
    }
    for nested in &message.nested_type {
        message_lines(&format!("{full}.{}", nested.name()), nested, out);
    }
    for e in &message.enum_type {
        for v in &e.value {
            out.insert(format!("enum {full}.{} {} {}", e.name(), v.number(), v.name()));
        }
    }
}
