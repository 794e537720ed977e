use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "mcp_servers")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub slug: String,
    pub name: String,
    pub url: Option<String>,
    #[sea_orm(column_type = "JsonBinary")]
    pub header_names: Json,
    /// An AEAD box (see `sealing.rs`); never a header value in clear.
    pub sealed_headers: Option<Vec<u8>>,
    pub forward_identity: bool,
    pub timeout_secs: i32,
    /// Hex SHA-256 of the server's verification token; never the token.
    pub verify_token_digest: Option<String>,
    pub verify_token_minted_at: Option<DateTimeUtc>,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
