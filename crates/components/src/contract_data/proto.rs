//! Contract-data changes as `contract_data.ContractDataChange` messages.

use flowctl_proto::contract_data::ContractDataChange as Message;
use stellar_contract_data::ContractDataChange;

pub fn to_message(r: &ContractDataChange) -> Message {
    Message {
        ledger_sequence: r.ledger_sequence,
        closed_at: r.closed_at as i64,
        change_index: r.change_index,
        ledger_entry_change: r.change_type.xdr(),
        deleted: r.deleted,
        evicted: r.evicted,
        contract_id: r.contract_id.clone(),
        contract_key_type: r.contract_key_type.clone(),
        contract_durability: r.contract_durability.to_string(),
        asset_code: r.asset_code.clone(),
        asset_issuer: r.asset_issuer.clone(),
        asset_type: r.asset_type.map(str::to_string),
        balance_holder: r.balance_holder.clone(),
        balance: r.balance.clone(),
        last_modified_ledger: r.last_modified_ledger,
        ledger_key_hash: r.ledger_key_hash.clone(),
        key_xdr: r.key_xdr.clone(),
        val_xdr: r.val_xdr.clone(),
        key_json: r.key.clone(),
        val_json: r.val.clone(),
        contract_instance_type: r.contract_instance_type.clone(),
        contract_instance_wasm_hash: r.contract_instance_wasm_hash.clone(),
        expiration_ledger_seq: r.expiration_ledger_seq,
        tx_hash: r.tx_hash.clone(),
        transaction_index: r.transaction_index,
        operation_index: r.operation_index,
    }
}
