//! Arrow Flight SQL: analysts query live and stored logs with ADBC, JDBC (DBeaver), Grafana or
//! `pyarrow.flight`, over TLS, with a bearer token or basic credentials.

pub mod auth;
pub mod client;
pub mod handle;
mod ipc_check;
mod metadata;
pub mod server;
pub mod service;
pub(crate) mod signin;

pub use auth::{Authenticator, Identity};
pub use server::FlightServer;
pub use service::FlightSql;
