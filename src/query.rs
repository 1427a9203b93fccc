//! Running SQL over the stored data: a read-only DataFusion session with the `logs` table, and
//! the output formats of `logwarden query`.

use std::sync::Arc;

use arrow::array::RecordBatch;
use datafusion::error::DataFusionError;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::prelude::{SQLOptions, SessionConfig, SessionContext};

use crate::store::{LogsTable, Store};

#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error("{0}")]
    Sql(#[from] DataFusionError),
    #[error("failed to format results: {0}")]
    Format(#[from] arrow::error::ArrowError),
}

/// SQL access to one store.
#[derive(Clone)]
pub struct QueryEngine {
    ctx: SessionContext,
}

impl QueryEngine {
    pub fn new(store: Store) -> Result<Self, QueryError> {
        let config = SessionConfig::new()
            .with_information_schema(true)
            .with_default_catalog_and_schema("logwarden", "public");
        let ctx = SessionContext::new_with_config(config);
        ctx.register_table("logs", Arc::new(LogsTable::new(store)))?;
        Ok(QueryEngine { ctx })
    }

    pub fn context(&self) -> &SessionContext {
        &self.ctx
    }

    /// Plan a read-only statement: DDL, DML and `SET`-style statements are refused.
    pub async fn stream(&self, sql: &str) -> Result<SendableRecordBatchStream, QueryError> {
        let opts = SQLOptions::new().with_allow_ddl(false).with_allow_dml(false).with_allow_statements(false);
        let df = self.ctx.sql_with_options(sql, opts).await?;
        Ok(df.execute_stream().await?)
    }

    /// Run a statement and collect its result.
    pub async fn collect(&self, sql: &str) -> Result<Vec<RecordBatch>, QueryError> {
        use futures::TryStreamExt;
        Ok(self.stream(sql).await?.try_collect().await?)
    }
}

/// How `logwarden query` prints results.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    Table,
    Csv,
    Json,
}

/// Render batches for a terminal or a pipe. JSON is one object per line.
pub fn format(batches: &[RecordBatch], fmt: OutputFormat) -> Result<String, QueryError> {
    match fmt {
        OutputFormat::Table => Ok(arrow::util::pretty::pretty_format_batches(batches)?.to_string()),
        OutputFormat::Csv => {
            let mut buf = Vec::new();
            {
                let mut w = arrow::csv::WriterBuilder::new().with_header(true).build(&mut buf);
                for b in batches {
                    w.write(b)?;
                }
            }
            Ok(String::from_utf8_lossy(&buf).into_owned())
        }
        OutputFormat::Json => {
            let mut buf = Vec::new();
            {
                let mut w = arrow::json::LineDelimitedWriter::new(&mut buf);
                for b in batches {
                    w.write(b)?;
                }
                w.finish()?;
            }
            Ok(String::from_utf8_lossy(&buf).into_owned())
        }
    }
}
