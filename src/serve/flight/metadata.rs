//! What GUI clients ask before they query: server facts (`GetSqlInfo`), the catalog tree
//! (catalogs, schemas, tables with their schemas), table types and the SQL types in use.
//!
//! The tree is read from the DataFusion session's catalogs at each request, so a table that a
//! later component registers appears in every client's browser without changes here.

use std::sync::LazyLock;

use arrow::array::RecordBatch;
use arrow::datatypes::Schema;
use arrow_flight::sql::metadata::{
    GetCatalogsBuilder, GetDbSchemasBuilder, GetTablesBuilder, SqlInfoData, SqlInfoDataBuilder, XdbcTypeInfo,
    XdbcTypeInfoData, XdbcTypeInfoDataBuilder,
};
use arrow_flight::sql::{
    Nullable, Searchable, SqlInfo, SqlNullOrdering, SqlSupportedTransaction, XdbcDataType,
    XdbcDatetimeSubcode,
};
use datafusion::datasource::TableType;
use datafusion::prelude::SessionContext;
use tonic::Status;

use crate::query::wire_schema;

/// Facts about the server for `GetSqlInfo`, built once.
pub static SQL_INFO: LazyLock<Result<SqlInfoData, String>> = LazyLock::new(|| {
    let mut b = SqlInfoDataBuilder::new();
    b.append(SqlInfo::FlightSqlServerName, "logwarden");
    b.append(SqlInfo::FlightSqlServerVersion, env!("CARGO_PKG_VERSION"));
    b.append(SqlInfo::FlightSqlServerArrowVersion, "59");
    b.append(SqlInfo::FlightSqlServerReadOnly, true);
    b.append(SqlInfo::FlightSqlServerSql, true);
    b.append(SqlInfo::FlightSqlServerSubstrait, false);
    b.append(SqlInfo::FlightSqlServerTransaction, SqlSupportedTransaction::None as i32);
    b.append(SqlInfo::FlightSqlServerCancel, false);
    b.append(SqlInfo::SqlDdlCatalog, false);
    b.append(SqlInfo::SqlDdlSchema, false);
    b.append(SqlInfo::SqlDdlTable, false);
    b.append(SqlInfo::SqlIdentifierQuoteChar, "\"");
    b.append(SqlInfo::SqlNullOrdering, SqlNullOrdering::SqlNullsSortedHigh as i32);
    b.build().map_err(|e| e.to_string())
});

pub fn sql_info() -> Result<&'static SqlInfoData, Status> {
    SQL_INFO.as_ref().map_err(|e| Status::internal(format!("server info table: {e}")))
}

/// The SQL types logwarden's tables and results use, for `GetXdbcTypeInfo`.
pub static XDBC_TYPES: LazyLock<Result<XdbcTypeInfoData, String>> = LazyLock::new(|| {
    let ty = |name: &str, data_type: XdbcDataType, size: Option<i32>| XdbcTypeInfo {
        type_name: name.to_owned(),
        data_type,
        column_size: size,
        literal_prefix: None,
        literal_suffix: None,
        create_params: None,
        nullable: Nullable::NullabilityNullable,
        case_sensitive: false,
        searchable: Searchable::Full,
        unsigned_attribute: None,
        fixed_prec_scale: false,
        auto_increment: Some(false),
        local_type_name: Some(name.to_owned()),
        minimum_scale: None,
        maximum_scale: None,
        sql_data_type: data_type,
        datetime_subcode: None,
        num_prec_radix: None,
        interval_precision: None,
    };
    let mut b = XdbcTypeInfoDataBuilder::new();
    b.append(XdbcTypeInfo {
        literal_prefix: Some("'".into()),
        literal_suffix: Some("'".into()),
        case_sensitive: true,
        ..ty("VARCHAR", XdbcDataType::XdbcVarchar, Some(i32::MAX))
    });
    b.append(XdbcTypeInfo {
        literal_prefix: Some("TIMESTAMP '".into()),
        literal_suffix: Some("'".into()),
        datetime_subcode: Some(XdbcDatetimeSubcode::XdbcSubcodeTimestamp),
        ..ty("TIMESTAMP", XdbcDataType::XdbcTimestamp, Some(35))
    });
    b.append(XdbcTypeInfo {
        unsigned_attribute: Some(true),
        num_prec_radix: Some(10),
        ..ty("TINYINT UNSIGNED", XdbcDataType::XdbcTinyint, Some(3))
    });
    b.append(XdbcTypeInfo {
        unsigned_attribute: Some(false),
        num_prec_radix: Some(10),
        ..ty("BIGINT", XdbcDataType::XdbcBigint, Some(19))
    });
    b.append(XdbcTypeInfo {
        unsigned_attribute: Some(false),
        num_prec_radix: Some(2),
        ..ty("DOUBLE", XdbcDataType::XdbcDouble, Some(53))
    });
    b.append(ty("BOOLEAN", XdbcDataType::XdbcBit, Some(1)));
    b.build().map_err(|e| e.to_string())
});

pub fn xdbc_types() -> Result<&'static XdbcTypeInfoData, Status> {
    XDBC_TYPES.as_ref().map_err(|e| Status::internal(format!("type info table: {e}")))
}

pub const TABLE_TYPES: &[&str] = &["TABLE", "VIEW", "SYSTEM TABLE", "LOCAL TEMPORARY"];

fn table_type_name(schema: &str, t: TableType) -> &'static str {
    match t {
        _ if schema == "information_schema" => "SYSTEM TABLE",
        TableType::Base => "TABLE",
        TableType::View => "VIEW",
        TableType::Temporary => "LOCAL TEMPORARY",
    }
}

pub fn catalogs(ctx: &SessionContext, mut b: GetCatalogsBuilder) -> Result<RecordBatch, Status> {
    for c in ctx.catalog_names() {
        b.append(c);
    }
    b.build().map_err(Status::from)
}

pub fn schemas(ctx: &SessionContext, mut b: GetDbSchemasBuilder) -> Result<RecordBatch, Status> {
    for c in ctx.catalog_names() {
        if let Some(catalog) = ctx.catalog(&c) {
            for s in catalog.schema_names() {
                b.append(&c, s);
            }
        }
    }
    b.build().map_err(Status::from)
}

/// Every table of every schema; the builder applies the request's filters. Schemas are the
/// ones results have on the wire (dictionary columns as their values).
/// Every table `visible(schema, table)` lets the caller see.
pub async fn tables(
    ctx: &SessionContext,
    mut b: GetTablesBuilder,
    visible: impl Fn(&str, &str) -> bool,
) -> Result<RecordBatch, Status> {
    for c in ctx.catalog_names() {
        let Some(catalog) = ctx.catalog(&c) else { continue };
        for s in catalog.schema_names() {
            let Some(schema) = catalog.schema(&s) else { continue };
            for t in schema.table_names() {
                if !visible(&s, &t) {
                    continue;
                }
                let Ok(Some(table)) = schema.table(&t).await else { continue };
                let wire = wire_schema(&table.schema());
                b.append(&c, &s, &t, table_type_name(&s, table.table_type()), &wire).map_err(Status::from)?;
            }
        }
    }
    b.build().map_err(Status::from)
}

/// The result schema of `GetExportedKeys`, `GetImportedKeys` and `GetCrossReference` as the
/// Flight SQL specification defines it (always empty here: log tables have no foreign keys).
pub fn foreign_keys_schema() -> Schema {
    use arrow::datatypes::{DataType, Field};
    let s = |n: &str, nullable| Field::new(n, DataType::Utf8, nullable);
    Schema::new(vec![
        s("pk_catalog_name", true),
        s("pk_db_schema_name", true),
        s("pk_table_name", false),
        s("pk_column_name", false),
        s("fk_catalog_name", true),
        s("fk_db_schema_name", true),
        s("fk_table_name", false),
        s("fk_column_name", false),
        Field::new("key_sequence", DataType::Int32, false),
        s("fk_key_name", true),
        s("pk_key_name", true),
        Field::new("update_rule", DataType::UInt8, false),
        Field::new("delete_rule", DataType::UInt8, false),
    ])
}

/// The result schema of `GetPrimaryKeys` as the Flight SQL specification defines it.
pub fn primary_keys_schema() -> Schema {
    use arrow::datatypes::{DataType, Field};
    Schema::new(vec![
        Field::new("catalog_name", DataType::Utf8, true),
        Field::new("db_schema_name", DataType::Utf8, true),
        Field::new("table_name", DataType::Utf8, false),
        Field::new("column_name", DataType::Utf8, false),
        Field::new("key_name", DataType::Utf8, true),
        Field::new("key_sequence", DataType::Int32, false),
    ])
}
