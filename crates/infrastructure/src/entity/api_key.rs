use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "api_keys")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub user_id: Uuid,
    pub name: String,
    pub description: Option<String>,
    #[sea_orm(unique)]
    pub key_prefix: String,
    pub key_hash: String,
    #[sea_orm(column_type = "JsonBinary")]
    pub permissions: Json,
    #[sea_orm(column_type = "JsonBinary")]
    pub ip_whitelist: Json,
    pub status: String,
    pub usage_count: i64,
    pub last_used_at: Option<DateTimeUtc>,
    pub created_at: DateTimeUtc,
    pub expires_at: DateTimeUtc,
    pub revoked_at: Option<DateTimeUtc>,
    pub revoked_by: Option<Uuid>,
    pub rate_limit_requests: Option<i32>,
    pub rate_limit_per_secs: Option<i32>,
    pub replaced_by: Option<Uuid>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
