//! Bounds on what a client may send the registry, so no request can grow its memory or the
//! run store without limit, and every answer fits below the clients' message limit.

use std::collections::HashMap;

use tonic::Status;

/// Service ids, component ids, pipeline names, run ids, map keys and event types.
pub const MAX_ID_BYTES: usize = 256;
/// Entries of a component's metadata map.
pub const MAX_METADATA_ENTRIES: usize = 64;
/// Keys plus values of a component's metadata map.
pub const MAX_METADATA_BYTES: usize = 64 * 1024;
/// A run's pipeline file.
pub const MAX_CONFIG_YAML_BYTES: usize = 1024 * 1024;
/// Entries of a heartbeat's or run's metrics map.
pub const MAX_METRICS_ENTRIES: usize = 256;
/// One metric's text value (v1 heartbeats) and a run's error message.
pub const MAX_TEXT_BYTES: usize = 64 * 1024;
/// Registrations the registry holds at once.
pub const MAX_SERVICES: usize = 16 * 1024;
/// Runs not yet ended (each holds its pipeline file in memory).
pub const MAX_ACTIVE_RUNS: usize = 256;
/// Entries of any repeated field (component ids, event types).
pub const MAX_LIST_ENTRIES: usize = 256;
/// The largest request the server decodes: the largest accepted pipeline file plus room
/// for everything else a request may carry.
pub const MAX_MESSAGE_BYTES: usize = MAX_CONFIG_YAML_BYTES + 256 * 1024;
/// Budget for one answer listing runs, below tonic's default 4 MiB client decode limit.
pub const MAX_ANSWER_BYTES: usize = 3 * 1024 * 1024;

fn size(n: usize) -> String {
    if n >= 1024 * 1024 && n.is_multiple_of(1024 * 1024) {
        format!("{} MiB", n / (1024 * 1024))
    } else if n >= 1024 && n.is_multiple_of(1024) {
        format!("{} KiB", n / 1024)
    } else {
        format!("{n} bytes")
    }
}

fn refuse(field: &str, what: String) -> Status {
    Status::invalid_argument(format!("{field}: {what}"))
}

/// A repeated field or map of at most `max` entries.
fn entries(field: &str, len: usize, max: usize) -> Result<(), Status> {
    if len > max {
        return Err(refuse(
            field,
            format!("{len} entries, over the limit of {max}"),
        ));
    }
    Ok(())
}

/// A string field of at most `max` bytes.
pub fn text(field: &str, value: &str, max: usize) -> Result<(), Status> {
    if value.len() > max {
        return Err(refuse(
            field,
            format!("{} bytes, over the limit of {}", value.len(), size(max)),
        ));
    }
    Ok(())
}

/// An id or name: at most [`MAX_ID_BYTES`].
pub fn id(field: &str, value: &str) -> Result<(), Status> {
    text(field, value, MAX_ID_BYTES)
}

/// A repeated field of ids: at most [`MAX_LIST_ENTRIES`] entries, each an id.
pub fn ids(field: &str, values: &[String]) -> Result<(), Status> {
    entries(field, values.len(), MAX_LIST_ENTRIES)?;
    values.iter().try_for_each(|v| id(field, v))
}

/// A component's metadata: at most [`MAX_METADATA_ENTRIES`] entries and
/// [`MAX_METADATA_BYTES`] of keys and values, keys being ids.
pub fn metadata(field: &str, map: &HashMap<String, String>) -> Result<(), Status> {
    entries(field, map.len(), MAX_METADATA_ENTRIES)?;
    let bytes: usize = map.iter().map(|(k, v)| k.len() + v.len()).sum();
    if bytes > MAX_METADATA_BYTES {
        return Err(refuse(
            field,
            format!(
                "{bytes} bytes of keys and values, over the limit of {}",
                size(MAX_METADATA_BYTES)
            ),
        ));
    }
    map.keys().try_for_each(|k| id(field, k))
}

/// A metrics map: at most [`MAX_METRICS_ENTRIES`] entries, keys being ids.
pub fn metrics<V>(field: &str, map: &HashMap<String, V>) -> Result<(), Status> {
    entries(field, map.len(), MAX_METRICS_ENTRIES)?;
    map.keys().try_for_each(|k| id(field, k))
}

/// A run's pipeline file: at most [`MAX_CONFIG_YAML_BYTES`].
pub fn config_yaml(value: &str) -> Result<(), Status> {
    text("config_yaml", value, MAX_CONFIG_YAML_BYTES)
}

/// The newest runs whose encoded size fits in [`MAX_ANSWER_BYTES`], and whether any were
/// left out.
pub fn fit_answer<T: prost::Message>(items: Vec<T>) -> (Vec<T>, bool) {
    let mut used = 0;
    let total = items.len();
    let mut kept = Vec::with_capacity(total);
    for item in items {
        // Field tag plus length prefix per entry.
        let len = item.encoded_len() + 16;
        if used + len > MAX_ANSWER_BYTES {
            break;
        }
        used += len;
        kept.push(item);
    }
    let truncated = kept.len() < total;
    (kept, truncated)
}
