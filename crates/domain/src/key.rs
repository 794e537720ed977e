//! The `McpApiKey` aggregate: a named key of one tenant user, changed only
//! through methods that keep its rules and return the event they caused.

use std::net::IpAddr;

use chrono::{DateTime, Duration, Utc};
use serde_json::json;
use thiserror::Error;

use crate::{
    ApiKeyId, ApiKeyPermissions, DomainEvent, EffectiveStatus, EventKind, IpWhitelist,
    KeyDescription, KeyName, KeyPrefix, LeakReport, RateLimit, ServerId, TenantId, UserId,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum KeyError {
    /// A revoked key is final: it cannot be edited, so nothing can make it
    /// look usable again.
    #[error("the key is revoked and can no longer be changed")]
    Revoked,
    /// An expired key stays expired: rotating it must not give it, or a
    /// successor, a new life (Unkey's reroll did).
    #[error("the key has expired")]
    Expired,
    /// A key is replaced once; its successor is the key to rotate next.
    #[error("the key has already been rotated")]
    AlreadyRotated,
}

/// Everything a key is issued with.
#[derive(Debug, Clone)]
pub struct NewKey {
    pub id: ApiKeyId,
    pub tenant_id: TenantId,
    pub owner: UserId,
    pub name: KeyName,
    pub description: Option<KeyDescription>,
    pub prefix: KeyPrefix,
    pub permissions: ApiKeyPermissions,
    pub ip_whitelist: IpWhitelist,
    pub rate_limit: Option<RateLimit>,
    pub expires_at: DateTime<Utc>,
}

/// What a rotation issues in the old key's place; everything else is copied.
#[derive(Debug, Clone)]
pub struct Successor {
    pub id: ApiKeyId,
    pub prefix: KeyPrefix,
    pub expires_at: DateTime<Utc>,
}

/// A rotation's outcome: the new key and the two events, `api_key.rotated`
/// on the old key and `api_key.created` on the new one.
#[derive(Debug, Clone)]
pub struct Rotation {
    pub successor: McpApiKey,
    pub rotated: DomainEvent,
    pub created: DomainEvent,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Revocation {
    pub at: DateTime<Utc>,
    pub by: UserId,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct KeyUsage {
    pub count: u64,
    pub last_used_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone)]
pub struct McpApiKey {
    id: ApiKeyId,
    tenant_id: TenantId,
    owner: UserId,
    name: KeyName,
    description: Option<KeyDescription>,
    prefix: KeyPrefix,
    permissions: ApiKeyPermissions,
    ip_whitelist: IpWhitelist,
    rate_limit: Option<RateLimit>,
    created_at: DateTime<Utc>,
    expires_at: DateTime<Utc>,
    revocation: Option<Revocation>,
    /// The key that replaced this one, once it has been rotated.
    replaced_by: Option<ApiKeyId>,
    usage: KeyUsage,
}

impl McpApiKey {
    /// Issues a new active key and the `api_key.created` event.
    #[must_use]
    pub fn issue(new: NewKey, now: DateTime<Utc>) -> (Self, DomainEvent) {
        let key = Self::restore(new, now, None, KeyUsage::default());
        let event = key.created_event(key.owner, now, None);
        (key, event)
    }

    fn created_event(
        &self,
        actor: UserId,
        now: DateTime<Utc>,
        rotated_from: Option<ApiKeyId>,
    ) -> DomainEvent {
        let mut data = json!({
            "name": self.name,
            "description": self.description,
            "key_prefix": self.prefix,
            "permissions": self.permissions,
            "ip_whitelist": self.ip_whitelist,
            "expires_at": self.expires_at,
        });
        if let Some(limit) = self.rate_limit {
            data["rate_limit"] = json!(limit);
        }
        if let Some(old) = rotated_from {
            data["rotated_from"] = json!(old);
        }
        self.event(EventKind::ApiKeyCreated, actor, now, data)
    }

    /// Replaces the key: the successor copies its name, description,
    /// permissions, allow-list, rate limit and owner, and this key's life is
    /// pulled in to `now + grace`, never past its own expiry. Only an active
    /// key that was not rotated before can be rotated.
    pub fn rotate(
        &mut self,
        successor: Successor,
        grace: Duration,
        actor: UserId,
        now: DateTime<Utc>,
    ) -> Result<Rotation, KeyError> {
        self.ensure_not_revoked()?;
        // Named before expiry: a key rotated without grace is expired too,
        // and "rotate its successor" is the more useful answer.
        if self.replaced_by.is_some() {
            return Err(KeyError::AlreadyRotated);
        }
        if self.status_at(now) == EffectiveStatus::Expired {
            return Err(KeyError::Expired);
        }
        let grace = grace.max(Duration::zero());
        self.expires_at = self.expires_at.min(now + grace);
        self.replaced_by = Some(successor.id);
        let new = Self::restore(
            NewKey {
                id: successor.id,
                tenant_id: self.tenant_id,
                owner: self.owner,
                name: self.name.clone(),
                description: self.description.clone(),
                prefix: successor.prefix,
                permissions: self.permissions.clone(),
                ip_whitelist: self.ip_whitelist.clone(),
                rate_limit: self.rate_limit,
                expires_at: successor.expires_at,
            },
            now,
            None,
            KeyUsage::default(),
        );
        let rotated = self.event(
            EventKind::ApiKeyRotated,
            actor,
            now,
            json!({
                "key_prefix": self.prefix,
                "replaced_by": new.id,
                "expires_at": self.expires_at,
                "grace_period_secs": grace.num_seconds(),
            }),
        );
        let created = new.created_event(actor, now, Some(self.id));
        Ok(Rotation {
            successor: new,
            rotated,
            created,
        })
    }

    /// Rebuilds a key from storage.
    #[must_use]
    pub fn restore(
        new: NewKey,
        created_at: DateTime<Utc>,
        revocation: Option<Revocation>,
        usage: KeyUsage,
    ) -> Self {
        Self {
            id: new.id,
            tenant_id: new.tenant_id,
            owner: new.owner,
            name: new.name,
            description: new.description,
            prefix: new.prefix,
            permissions: new.permissions,
            ip_whitelist: new.ip_whitelist,
            rate_limit: new.rate_limit,
            created_at,
            expires_at: new.expires_at,
            revocation,
            replaced_by: None,
            usage,
        }
    }

    /// A restored key that was rotated into `successor`.
    #[must_use]
    pub fn replaced_by_key(mut self, successor: Option<ApiKeyId>) -> Self {
        self.replaced_by = successor;
        self
    }

    /// Renames and/or re-describes the key. `None` keeps a field as it is;
    /// `Some(None)` clears the description. Returns no event when nothing
    /// actually changed.
    pub fn update_metadata(
        &mut self,
        name: Option<KeyName>,
        description: Option<Option<KeyDescription>>,
        actor: UserId,
        now: DateTime<Utc>,
    ) -> Result<Option<DomainEvent>, KeyError> {
        self.ensure_not_revoked()?;
        let mut changes = serde_json::Map::new();
        if let Some(name) = name.filter(|name| *name != self.name) {
            changes.insert("name".into(), json!(name));
            self.name = name;
        }
        if let Some(description) = description.filter(|d| *d != self.description) {
            changes.insert("description".into(), json!(description));
            self.description = description;
        }
        if changes.is_empty() {
            return Ok(None);
        }
        Ok(Some(self.event(
            EventKind::ApiKeyMetadataUpdated,
            actor,
            now,
            changes.into(),
        )))
    }

    /// Replaces the permissions and/or the IP allow-list.
    pub fn update_permissions(
        &mut self,
        permissions: Option<ApiKeyPermissions>,
        ip_whitelist: Option<IpWhitelist>,
        actor: UserId,
        now: DateTime<Utc>,
    ) -> Result<Option<DomainEvent>, KeyError> {
        self.change_access(permissions, ip_whitelist, None, actor, now)
    }

    /// Replaces what the key may do: its permissions, its IP allow-list and
    /// its rate limit (`Some(None)` removes the limit). `None` keeps a part
    /// as it is. One `api_key.permissions_updated` event names every part
    /// that changed; none when nothing did.
    pub fn change_access(
        &mut self,
        permissions: Option<ApiKeyPermissions>,
        ip_whitelist: Option<IpWhitelist>,
        rate_limit: Option<Option<RateLimit>>,
        actor: UserId,
        now: DateTime<Utc>,
    ) -> Result<Option<DomainEvent>, KeyError> {
        self.ensure_not_revoked()?;
        let mut changes = serde_json::Map::new();
        if let Some(permissions) = permissions.filter(|p| *p != self.permissions) {
            changes.insert("permissions".into(), json!(permissions));
            self.permissions = permissions;
        }
        if let Some(list) = ip_whitelist.filter(|list| *list != self.ip_whitelist) {
            changes.insert("ip_whitelist".into(), json!(list));
            self.ip_whitelist = list;
        }
        if let Some(limit) = rate_limit.filter(|limit| *limit != self.rate_limit) {
            changes.insert("rate_limit".into(), json!(limit));
            self.rate_limit = limit;
        }
        if changes.is_empty() {
            return Ok(None);
        }
        Ok(Some(self.event(
            EventKind::ApiKeyPermissionsUpdated,
            actor,
            now,
            changes.into(),
        )))
    }

    /// Drops the key's grant on a deleted server, revoked key or not: a
    /// grant on a server that no longer exists must not be shown, nor kept
    /// for a successor to inherit. `None` when the key held no such grant.
    /// The event is a permissions change, so every instance's cache of
    /// verified keys forgets the key through the change feed.
    pub fn remove_server_grant(
        &mut self,
        server: ServerId,
        actor: UserId,
        now: DateTime<Utc>,
    ) -> Option<DomainEvent> {
        let narrowed = self.permissions.without_server(server)?;
        self.permissions = narrowed;
        Some(self.event(
            EventKind::ApiKeyPermissionsUpdated,
            actor,
            now,
            json!({ "permissions": self.permissions, "removed_server_id": server }),
        ))
    }

    /// Revokes the key. Revoking a revoked key changes nothing and records
    /// nothing.
    pub fn revoke(&mut self, actor: UserId, now: DateTime<Utc>) -> Option<DomainEvent> {
        if self.revocation.is_some() {
            return None;
        }
        self.revocation = Some(Revocation { at: now, by: actor });
        Some(self.event(
            EventKind::ApiKeyRevoked,
            actor,
            now,
            json!({ "key_prefix": self.prefix }),
        ))
    }

    /// Revokes a key whose holder reported it leaked. The actor is
    /// [`UserId::SYSTEM`]: the reporter proved they hold the key, not who
    /// they are. Nothing is recorded for a key already revoked.
    pub fn revoke_reported(
        &mut self,
        report: &LeakReport,
        now: DateTime<Utc>,
    ) -> Option<DomainEvent> {
        if self.revocation.is_some() {
            return None;
        }
        let actor = UserId::SYSTEM;
        self.revocation = Some(Revocation { at: now, by: actor });
        Some(self.event(
            EventKind::ApiKeyRevoked,
            actor,
            now,
            json!({
                "key_prefix": self.prefix,
                "reason": "reported",
                "url": report.where_found(),
                "source": report.found_by(),
            }),
        ))
    }

    #[must_use]
    pub fn status_at(&self, now: DateTime<Utc>) -> EffectiveStatus {
        if self.revocation.is_some() {
            EffectiveStatus::Revoked
        } else if now >= self.expires_at {
            EffectiveStatus::Expired
        } else {
            EffectiveStatus::Active
        }
    }

    /// Whether the key is usable at `now` (not revoked, not expired).
    #[must_use]
    pub fn is_usable_at(&self, now: DateTime<Utc>) -> bool {
        self.status_at(now) == EffectiveStatus::Active
    }

    #[must_use]
    pub fn allows_address(&self, addr: IpAddr) -> bool {
        self.ip_whitelist.allows(addr)
    }

    fn ensure_not_revoked(&self) -> Result<(), KeyError> {
        if self.revocation.is_some() {
            Err(KeyError::Revoked)
        } else {
            Ok(())
        }
    }

    fn event(
        &self,
        kind: EventKind,
        actor: UserId,
        now: DateTime<Utc>,
        data: serde_json::Value,
    ) -> DomainEvent {
        DomainEvent {
            kind,
            key_id: self.id,
            tenant_id: self.tenant_id,
            key_prefix: self.prefix.clone(),
            actor_user_id: actor,
            occurred_at: now,
            data,
        }
    }

    #[must_use]
    pub fn id(&self) -> ApiKeyId {
        self.id
    }
    #[must_use]
    pub fn tenant_id(&self) -> TenantId {
        self.tenant_id
    }
    #[must_use]
    pub fn owner(&self) -> UserId {
        self.owner
    }
    #[must_use]
    pub fn name(&self) -> &KeyName {
        &self.name
    }
    #[must_use]
    pub fn description(&self) -> Option<&KeyDescription> {
        self.description.as_ref()
    }
    #[must_use]
    pub fn prefix(&self) -> &KeyPrefix {
        &self.prefix
    }
    #[must_use]
    pub fn permissions(&self) -> &ApiKeyPermissions {
        &self.permissions
    }
    #[must_use]
    pub fn ip_whitelist(&self) -> &IpWhitelist {
        &self.ip_whitelist
    }
    #[must_use]
    pub fn rate_limit(&self) -> Option<RateLimit> {
        self.rate_limit
    }
    #[must_use]
    pub fn replaced_by(&self) -> Option<ApiKeyId> {
        self.replaced_by
    }
    #[must_use]
    pub fn created_at(&self) -> DateTime<Utc> {
        self.created_at
    }
    #[must_use]
    pub fn expires_at(&self) -> DateTime<Utc> {
        self.expires_at
    }
    #[must_use]
    pub fn revocation(&self) -> Option<Revocation> {
        self.revocation
    }
    #[must_use]
    pub fn usage(&self) -> KeyUsage {
        self.usage
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ApiKeySecret;
    use chrono::Duration;
    use rand::SeedableRng;
    use uuid::Uuid;

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-03-01T12:00:00Z")
            .expect("date")
            .with_timezone(&Utc)
    }

    fn new_key() -> (McpApiKey, DomainEvent) {
        let Ok(secret) = ApiKeySecret::generate(&mut rand::rngs::StdRng::seed_from_u64(9));
        McpApiKey::issue(
            NewKey {
                id: ApiKeyId::from_uuid(Uuid::from_u128(1)),
                tenant_id: TenantId::from_uuid(Uuid::from_u128(2)),
                owner: UserId::from_uuid(Uuid::from_u128(3)),
                name: KeyName::parse("laptop").expect("name"),
                description: None,
                prefix: secret.prefix(),
                permissions: ApiKeyPermissions::default(),
                ip_whitelist: IpWhitelist::default(),
                rate_limit: None,
                expires_at: now() + Duration::days(30),
            },
            now(),
        )
    }

    fn admin() -> UserId {
        UserId::from_uuid(Uuid::from_u128(4))
    }

    #[test]
    fn issuing_records_a_created_event_by_the_owner() {
        let (key, event) = new_key();
        assert_eq!(event.kind, EventKind::ApiKeyCreated);
        assert_eq!(event.actor_user_id, key.owner());
        assert_eq!(event.data["key_prefix"], key.prefix().as_str());
        assert_eq!(key.status_at(now()), EffectiveStatus::Active);
    }

    #[test]
    fn a_key_is_expired_from_its_expiry_instant_on() {
        let (key, _) = new_key();
        let expiry = key.expires_at();
        assert_eq!(
            key.status_at(expiry - Duration::milliseconds(1)),
            EffectiveStatus::Active
        );
        assert_eq!(key.status_at(expiry), EffectiveStatus::Expired);
    }

    #[test]
    fn revoking_twice_records_one_event_and_keeps_the_first_revocation() {
        let (mut key, _) = new_key();
        let first = key.revoke(admin(), now());
        assert_eq!(first.map(|e| e.kind), Some(EventKind::ApiKeyRevoked));
        assert!(
            key.revoke(key.owner(), now() + Duration::hours(1))
                .is_none()
        );
        assert_eq!(
            key.revocation(),
            Some(Revocation {
                at: now(),
                by: admin()
            })
        );
        assert_eq!(key.status_at(now()), EffectiveStatus::Revoked);
    }

    #[test]
    fn revocation_wins_over_expiry() {
        let (mut key, _) = new_key();
        key.revoke(admin(), now());
        assert_eq!(
            key.status_at(key.expires_at() + Duration::days(1)),
            EffectiveStatus::Revoked
        );
    }

    #[test]
    fn a_revoked_key_cannot_be_edited() {
        let (mut key, _) = new_key();
        key.revoke(admin(), now());
        let rename = key.update_metadata(
            Some(KeyName::parse("new").expect("name")),
            None,
            admin(),
            now(),
        );
        assert_eq!(rename, Err(KeyError::Revoked));
        let widen = key.update_permissions(
            Some(ApiKeyPermissions::new(true, true, None, None).expect("perms")),
            None,
            admin(),
            now(),
        );
        assert_eq!(widen, Err(KeyError::Revoked));
        assert!(!key.permissions().write());
    }

    #[test]
    fn a_metadata_update_records_only_what_changed() {
        let (mut key, _) = new_key();
        let event = key
            .update_metadata(
                Some(KeyName::parse("laptop").expect("name")),
                Some(Some(KeyDescription::parse("work").expect("desc"))),
                admin(),
                now(),
            )
            .expect("editable")
            .expect("changed");
        assert_eq!(event.kind, EventKind::ApiKeyMetadataUpdated);
        assert_eq!(event.data, json!({"description": "work"}));
        assert_eq!(event.actor_user_id, admin());
    }

    #[test]
    fn an_update_that_changes_nothing_records_nothing() {
        let (mut key, _) = new_key();
        let same = key.update_permissions(
            Some(ApiKeyPermissions::default()),
            Some(IpWhitelist::default()),
            admin(),
            now(),
        );
        assert_eq!(same, Ok(None));
    }

    fn successor() -> Successor {
        let Ok(secret) = ApiKeySecret::generate(&mut rand::rngs::StdRng::seed_from_u64(10));
        Successor {
            id: ApiKeyId::from_uuid(Uuid::from_u128(5)),
            prefix: secret.prefix(),
            expires_at: now() + Duration::days(90),
        }
    }

    #[test]
    fn a_rotation_copies_the_key_and_pulls_the_old_expiry_in_to_the_grace() {
        let (mut key, _) = new_key();
        let limit = RateLimit::new(10, 60).expect("limit");
        key.change_access(None, None, Some(Some(limit)), admin(), now())
            .expect("editable");
        let rotation = key
            .rotate(successor(), Duration::seconds(30), admin(), now())
            .expect("rotatable");
        let new = &rotation.successor;
        assert_eq!(key.expires_at(), now() + Duration::seconds(30));
        assert_eq!(key.replaced_by(), Some(new.id()));
        assert_eq!(
            (new.name(), new.owner(), new.rate_limit()),
            (key.name(), key.owner(), Some(limit))
        );
        assert_eq!(new.permissions(), key.permissions());
        assert_eq!(rotation.rotated.kind, EventKind::ApiKeyRotated);
        assert_eq!(rotation.rotated.data["replaced_by"], json!(new.id()));
        assert_eq!(rotation.created.kind, EventKind::ApiKeyCreated);
        assert_eq!(rotation.created.key_id, new.id());
        assert_eq!(rotation.created.data["rotated_from"], json!(key.id()));
        assert_eq!(rotation.created.actor_user_id, admin());
    }

    #[test]
    fn a_grace_never_outlives_the_old_expiry() {
        let (mut key, _) = new_key();
        let expiry = key.expires_at();
        key.rotate(successor(), Duration::days(400), admin(), now())
            .expect("rotatable");
        assert_eq!(key.expires_at(), expiry);
    }

    #[test]
    fn a_grace_of_zero_expires_the_old_key_at_once() {
        let (mut key, _) = new_key();
        key.rotate(successor(), Duration::zero(), admin(), now())
            .expect("rotatable");
        assert_eq!(key.status_at(now()), EffectiveStatus::Expired);
    }

    #[test]
    fn only_an_active_key_not_rotated_before_can_be_rotated() {
        let (mut rotated, _) = new_key();
        rotated
            .rotate(successor(), Duration::hours(1), admin(), now())
            .expect("first");
        assert_eq!(
            rotated
                .rotate(successor(), Duration::hours(1), admin(), now())
                .map(|_| ()),
            Err(KeyError::AlreadyRotated)
        );
        let (expired, _) = new_key();
        let mut expired = expired;
        let later = expired.expires_at();
        assert_eq!(
            expired
                .rotate(successor(), Duration::hours(1), admin(), later)
                .map(|_| ()),
            Err(KeyError::Expired)
        );
        assert_eq!(expired.expires_at(), later, "an expired key is not revived");
        let (mut revoked, _) = new_key();
        revoked.revoke(admin(), now());
        assert_eq!(
            revoked
                .rotate(successor(), Duration::hours(1), admin(), now())
                .map(|_| ()),
            Err(KeyError::Revoked)
        );
    }

    #[test]
    fn a_reported_key_is_revoked_by_the_system_with_the_report() {
        let (mut key, _) = new_key();
        let report = LeakReport::new(Some("https://example.com/x"), Some("paste")).expect("ok");
        let event = key.revoke_reported(&report, now()).expect("revoked");
        assert_eq!(event.actor_user_id, UserId::SYSTEM);
        assert_eq!(event.data["reason"], "reported");
        assert_eq!(event.data["url"], "https://example.com/x");
        assert_eq!(event.data["source"], "paste");
        assert!(key.revoke_reported(&report, now()).is_none());
    }

    #[test]
    fn a_permissions_update_replaces_the_allow_list() {
        let (mut key, _) = new_key();
        let list = IpWhitelist::parse(&["10.0.0.0/8"]).expect("list");
        let event = key
            .update_permissions(None, Some(list), admin(), now())
            .expect("editable")
            .expect("changed");
        assert_eq!(event.data, json!({"ip_whitelist": ["10.0.0.0/8"]}));
        assert!(!key.allows_address("192.168.0.1".parse().expect("ip")));
        assert!(key.allows_address("10.1.1.1".parse().expect("ip")));
    }
}
