//! The generated types must put each field under the number wire.md gives it: components
//! built for the Go flowctl decode these bytes.

use flowctl_proto::flowctl::{ServiceHeartbeat, ServiceInfo};
use flowctl_proto::raw_ledger_service::RawLedger;
use flowctl_proto::token_transfer::{
    token_transfer_event::Event, EventMeta, Fee, TokenTransferEvent,
};
use prost::Message;

/// The tag byte of a length-delimited field (wire type 2).
fn len_tag(field: u8) -> u8 {
    (field << 3) | 2
}

#[test]
fn service_info_component_id_is_field_8() {
    let info = ServiceInfo {
        component_id: "x".into(),
        ..Default::default()
    };
    assert_eq!(info.encode_to_vec(), vec![len_tag(8), 1, b'x']);
}

#[test]
fn heartbeat_metrics_map_is_field_3_with_double_values() {
    let mut hb = ServiceHeartbeat::default();
    hb.metrics.insert("a".into(), 1.0);
    let bytes = hb.encode_to_vec();
    // field 3 entry { 1: "a", 2: fixed64 1.0 }
    assert_eq!(bytes[0], len_tag(3));
    assert_eq!(&bytes[2..5], &[len_tag(1), 1, b'a']);
    assert_eq!(bytes[5], (2 << 3) | 1);
    assert_eq!(&bytes[6..14], &1.0f64.to_le_bytes());
}

#[test]
fn raw_ledger_sequence_is_varint_field_1_and_xdr_is_bytes_field_2() {
    let ledger = RawLedger {
        sequence: 5,
        ledger_close_meta_xdr: vec![9].into(),
    };
    assert_eq!(ledger.encode_to_vec(), vec![1 << 3, 5, len_tag(2), 1, 9]);
}

#[test]
fn fee_event_is_oneof_field_6_and_operation_index_is_optional() {
    let event = TokenTransferEvent {
        meta: Some(EventMeta {
            operation_index: None,
            ..Default::default()
        }),
        event: Some(Event::Fee(Fee {
            amount: "1".into(),
            ..Default::default()
        })),
    };
    let bytes = event.encode_to_vec();
    assert_eq!(
        &bytes[..2],
        &[len_tag(1), 0],
        "empty meta: absent operation index is not encoded"
    );
    assert_eq!(bytes[2], len_tag(6));

    let with_zero = EventMeta {
        operation_index: Some(0),
        ..Default::default()
    };
    assert_eq!(
        with_zero.encode_to_vec(),
        vec![5 << 3, 0],
        "an explicit 0 is still sent"
    );
}

#[test]
fn dead_letter_report_ledger_is_varint_field_4_and_payload_is_bytes_field_6() {
    use flowctl_proto::flowctl::v1::ReportDeadLetterRequest;
    let report = ReportDeadLetterRequest {
        ledger: 998,
        payload: vec![7],
        ..Default::default()
    };
    // 998 as a varint is 0xe6 0x07.
    assert_eq!(
        report.encode_to_vec(),
        vec![4 << 3, 0xe6, 0x07, len_tag(6), 1, 7]
    );
}
