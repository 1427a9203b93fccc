//! Flight SQL statement handles (`serve::flight::handle::Statement`) and the tickets that carry
//! them, decoded as `do_get` decodes them (a protobuf `Any`, then the Flight SQL command).
//!
//! Input: a handle, and the same bytes as a ticket. Invariants:
//! - decoding never panics, whatever the bytes (a client can send any);
//! - a handle that decodes re-encodes to a handle that decodes to the same statement (SQL and
//!   bound parameters), and re-encoding that is a fixed point: binding in one call and running
//!   in another cannot change or drop a parameter;
//! - the same holds through a ticket (`TicketStatementQuery`) and a prepared-statement command.

use arrow_flight::sql::{Any, Command, CommandPreparedStatementQuery, ProstMessageExt, TicketStatementQuery};
use logwarden::serve::flight::handle::Statement;
use prost::Message;

pub fn run(data: &[u8]) {
    if let Ok(stmt) = Statement::decode(data) {
        round_trip(&stmt);
    }
    if let Ok(any) = Any::decode(data) {
        let handle = match Command::try_from(any) {
            Ok(Command::TicketStatementQuery(t)) => t.statement_handle,
            Ok(Command::CommandPreparedStatementQuery(c)) => c.prepared_statement_handle,
            _ => return,
        };
        if let Ok(stmt) = Statement::decode(&handle) {
            round_trip(&stmt);
        }
    }
}

fn round_trip(stmt: &Statement) {
    let handle = stmt.encode();
    let back =
        Statement::decode(&handle).unwrap_or_else(|e| panic!("a re-encoded handle does not decode: {e}"));
    assert_eq!(&back, stmt, "a handle changed through encode and decode");
    assert_eq!(back.encode(), handle, "re-encoding is not a fixed point");

    let ticket = TicketStatementQuery { statement_handle: handle.clone() }.as_any().encode_to_vec();
    let cmd = CommandPreparedStatementQuery { prepared_statement_handle: handle }.as_any().encode_to_vec();
    for bytes in [ticket, cmd] {
        let any = Any::decode(bytes.as_slice()).expect("a ticket we encoded decodes");
        let handle = match Command::try_from(any).expect("a command we encoded decodes") {
            Command::TicketStatementQuery(t) => t.statement_handle,
            Command::CommandPreparedStatementQuery(c) => c.prepared_statement_handle,
            other => panic!("encoded one command, decoded another: {other:?}"),
        };
        let again =
            Statement::decode(&handle).unwrap_or_else(|e| panic!("a ticket's handle does not decode: {e}"));
        assert_eq!(&again, stmt, "a statement changed through a ticket");
    }
}
