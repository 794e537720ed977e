//! A key's scope: what a request made with the key may reach. Every "may it?"
//! question of a request is answered here and nowhere else — listing and
//! calling, Cola's own endpoint and a tenant's server alike — so a
//! path that forgets to ask cannot widen access, and "listed" and "usable"
//! can never disagree.

use crate::ServerId;
use crate::permissions::{ApiKeyPermissions, NamePattern, ResourcePattern};

/// Where a request goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Surface {
    /// Cola's own MCP endpoint, `/mcp`.
    Cola,
    /// A tenant's MCP server through the gateway, by its id — never by its
    /// slug, which a deleted server's successor may reuse.
    Server(ServerId),
}

/// What a key may use on one surface: the key's read/write flags and that
/// surface's allow-lists (`None` = whatever the flags allow, empty = nothing).
#[derive(Debug, Clone, Copy)]
pub struct SurfaceScope<'a> {
    read: bool,
    write: bool,
    tools: Option<&'a [NamePattern]>,
    resources: Option<&'a [ResourcePattern]>,
    prompts: Option<&'a [NamePattern]>,
}

impl ApiKeyPermissions {
    /// The key's scope on `surface`, or `None` when the key may not reach it
    /// at all. A tenant's server is reachable only through a grant naming
    /// its id (deny by default): the key's flags with the grant's lists.
    #[must_use]
    pub fn scope_on(&self, surface: Surface) -> Option<SurfaceScope<'_>> {
        match surface {
            Surface::Cola => Some(SurfaceScope {
                read: self.read(),
                write: self.write(),
                tools: self.allowed_tools(),
                resources: self.allowed_resources(),
                // Cola serves no prompts of its own; a grant's list will.
                prompts: None,
            }),
            Surface::Server(id) => self.grant_on(id).map(|grant| SurfaceScope {
                read: self.read(),
                write: self.write(),
                tools: grant.allowed_tools(),
                resources: grant.allowed_resources(),
                prompts: grant.allowed_prompts(),
            }),
        }
    }
}

impl SurfaceScope<'_> {
    /// Whether a tool may be listed and called. A tool annotated read-only
    /// needs `read`; any other tool (no annotation included) needs `write`.
    #[must_use]
    pub fn may_use_tool(&self, name: &str, read_only: bool) -> bool {
        let flag = if read_only { self.read } else { self.write };
        flag && named(self.tools, name)
    }

    /// Whether a tool of unknown annotations may be used as far as its name
    /// goes: the grant names it and the key has a flag a tool could need.
    /// For a server that asks the verify API without saying whether the
    /// tool is read-only; it applies the flags, which it is told, itself.
    #[must_use]
    pub fn may_use_tool_named(&self, name: &str) -> bool {
        (self.read || self.write) && named(self.tools, name)
    }

    /// Whether the resource at `uri` may be listed, read or subscribed to.
    #[must_use]
    pub fn may_read_resource(&self, uri: &str) -> bool {
        self.read && matches_any(self.resources, uri)
    }

    /// Whether a resource template may be listed: decided by its
    /// `uriTemplate` string, as a resource is by its URI.
    #[must_use]
    pub fn may_list_resource_template(&self, uri_template: &str) -> bool {
        self.read && matches_any(self.resources, uri_template)
    }

    /// Whether a prompt may be listed and got.
    #[must_use]
    pub fn may_get_prompt(&self, name: &str) -> bool {
        self.read && named(self.prompts, name)
    }
}

fn named(list: Option<&[NamePattern]>, name: &str) -> bool {
    list.is_none_or(|patterns| patterns.iter().any(|pattern| pattern.matches(name)))
}

fn matches_any(list: Option<&[ResourcePattern]>, uri: &str) -> bool {
    list.is_none_or(|patterns| patterns.iter().any(|pattern| pattern.matches(uri)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ServerGrant, ServerSlug};

    fn perms(
        read: bool,
        write: bool,
        tools: Option<&[&str]>,
        resources: Option<&[&str]>,
    ) -> ApiKeyPermissions {
        let owned =
            |list: Option<&[&str]>| list.map(|l| l.iter().map(|s| (*s).to_owned()).collect());
        ApiKeyPermissions::new(read, write, owned(tools), owned(resources)).expect("valid")
    }

    fn cola(permissions: &ApiKeyPermissions) -> SurfaceScope<'_> {
        permissions
            .scope_on(Surface::Cola)
            .expect("Cola is always reachable")
    }

    #[test]
    fn a_read_only_tool_needs_read_and_any_other_needs_write() {
        let read_only = perms(true, false, None, None);
        assert!(cola(&read_only).may_use_tool("whoami", true));
        assert!(!cola(&read_only).may_use_tool("revoke_api_key", false));
        let write_only = perms(false, true, None, None);
        assert!(!cola(&write_only).may_use_tool("whoami", true));
        assert!(cola(&write_only).may_use_tool("revoke_api_key", false));
    }

    #[test]
    fn a_tool_list_allows_only_the_tools_it_names_and_an_empty_one_none() {
        let listed = perms(true, true, Some(&["whoami"]), None);
        assert!(cola(&listed).may_use_tool("whoami", true));
        assert!(!cola(&listed).may_use_tool("list_api_keys", true));
        let empty = perms(true, true, Some(&[]), None);
        assert!(!cola(&empty).may_use_tool("whoami", true));
    }

    #[test]
    fn resources_and_templates_need_read_and_a_matching_pattern() {
        let scoped = perms(true, false, None, Some(&["cola://keys/*"]));
        assert!(cola(&scoped).may_read_resource("cola://keys/1"));
        assert!(!cola(&scoped).may_read_resource("cola://other/1"));
        assert!(cola(&scoped).may_list_resource_template("cola://keys/{id}"));
        let write_only = perms(false, true, None, None);
        assert!(!cola(&write_only).may_read_resource("cola://keys/1"));
        assert!(!cola(&write_only).may_get_prompt("any"));
    }

    fn server(n: u128) -> ServerId {
        ServerId::from_uuid(uuid::Uuid::from_u128(n))
    }

    fn granted(
        read: bool,
        write: bool,
        id: ServerId,
        slug: &str,
        lists: [Option<&[&str]>; 3],
    ) -> ApiKeyPermissions {
        let owned =
            |list: Option<&[&str]>| list.map(|l| l.iter().map(|s| (*s).to_owned()).collect());
        let grant = ServerGrant::new(
            id,
            ServerSlug::parse(slug).expect("slug"),
            owned(lists[0]),
            owned(lists[1]),
            owned(lists[2]),
        )
        .expect("valid grant");
        perms(read, write, None, None).with_servers(vec![grant])
    }

    #[test]
    fn no_tenant_server_is_reachable_without_a_grant() {
        let everything = perms(true, true, None, None);
        assert!(everything.scope_on(Surface::Server(server(1))).is_none());
    }

    #[test]
    fn a_grant_opens_only_the_server_it_names() {
        let key = granted(true, true, server(1), "github", [None, None, None]);
        assert!(key.scope_on(Surface::Server(server(1))).is_some());
        assert!(key.scope_on(Surface::Server(server(2))).is_none());
    }

    #[test]
    fn a_recreated_slug_with_a_new_id_is_not_granted() {
        // The grant names the deleted server; its successor has a new id.
        let key = granted(true, true, server(1), "github", [None, None, None]);
        assert!(key.scope_on(Surface::Server(server(9))).is_none());
    }

    #[test]
    fn the_key_flags_apply_to_tools_on_a_server() {
        let read_only = granted(true, false, server(1), "gh", [None, None, None]);
        let scope = read_only
            .scope_on(Surface::Server(server(1)))
            .expect("granted");
        assert!(scope.may_use_tool("search", true));
        assert!(!scope.may_use_tool("create_issue", false));
        let write_only = granted(false, true, server(1), "gh", [None, None, None]);
        let scope = write_only
            .scope_on(Surface::Server(server(1)))
            .expect("granted");
        assert!(!scope.may_use_tool("search", true));
        assert!(scope.may_use_tool("create_issue", false));
    }

    #[test]
    fn a_tool_of_unknown_kind_is_decided_by_its_name() {
        let key = granted(
            true,
            false,
            server(1),
            "gh",
            [Some(&["search_*"]), None, None],
        );
        let scope = key.scope_on(Surface::Server(server(1))).expect("granted");
        assert!(scope.may_use_tool_named("search_code"));
        assert!(!scope.may_use_tool_named("create_issue"));
    }

    #[test]
    fn a_grant_tool_list_matches_names_and_trailing_star_prefixes() {
        let key = granted(
            true,
            true,
            server(1),
            "gh",
            [Some(&["search_*", "get_issue"]), None, None],
        );
        let scope = key.scope_on(Surface::Server(server(1))).expect("granted");
        assert!(scope.may_use_tool("search_code", true));
        assert!(scope.may_use_tool("get_issue", true));
        assert!(!scope.may_use_tool("get_issues", true));
        assert!(!scope.may_use_tool("create_issue", false));
    }

    #[test]
    fn an_empty_grant_list_allows_nothing() {
        let key = granted(
            true,
            true,
            server(1),
            "gh",
            [Some(&[]), Some(&[]), Some(&[])],
        );
        let scope = key.scope_on(Surface::Server(server(1))).expect("granted");
        assert!(!scope.may_use_tool("search", true));
        assert!(!scope.may_read_resource("repo://x"));
        assert!(!scope.may_list_resource_template("repo://{x}"));
        assert!(!scope.may_get_prompt("summarise"));
    }

    #[test]
    fn grant_resources_and_templates_need_read_and_a_matching_pattern() {
        let key = granted(
            true,
            false,
            server(1),
            "gh",
            [None, Some(&["repo://cola/*"]), None],
        );
        let scope = key.scope_on(Surface::Server(server(1))).expect("granted");
        assert!(scope.may_read_resource("repo://cola/readme"));
        assert!(!scope.may_read_resource("repo://other/readme"));
        assert!(scope.may_list_resource_template("repo://cola/{path}"));
        assert!(!scope.may_list_resource_template("repo://{owner}/{path}"));
        let write_only = granted(false, true, server(1), "gh", [None, None, None]);
        let scope = write_only
            .scope_on(Surface::Server(server(1)))
            .expect("granted");
        assert!(!scope.may_read_resource("repo://cola/readme"));
        assert!(!scope.may_list_resource_template("repo://cola/{path}"));
    }

    #[test]
    fn a_resource_uri_that_could_climb_out_of_a_granted_prefix_is_not_readable() {
        let key = granted(
            true,
            false,
            server(1),
            "gh",
            [None, Some(&["repo://cola/*"]), None],
        );
        let scope = key.scope_on(Surface::Server(server(1))).expect("granted");
        assert!(scope.may_read_resource("repo://cola/readme"));
        for uri in [
            "repo://cola/../secret",
            "repo://cola/%2e%2e/secret",
            "repo://cola/..%2fsecret",
            "repo://cola/..\\secret",
            "repo://cola/x#/../../secret",
        ] {
            assert!(!scope.may_read_resource(uri), "{uri}");
        }
        // Cola's own allow-list follows the same rule.
        let own = perms(true, false, None, Some(&["cola://keys/*"]));
        assert!(cola(&own).may_read_resource("cola://keys/1"));
        assert!(!cola(&own).may_read_resource("cola://keys/../admin"));
    }

    #[test]
    fn grant_prompts_need_read_and_a_matching_pattern() {
        let key = granted(
            true,
            false,
            server(1),
            "gh",
            [None, None, Some(&["review_*"])],
        );
        let scope = key.scope_on(Surface::Server(server(1))).expect("granted");
        assert!(scope.may_get_prompt("review_pr"));
        assert!(!scope.may_get_prompt("summarise"));
        let write_only = granted(false, true, server(1), "gh", [None, None, None]);
        let scope = write_only
            .scope_on(Surface::Server(server(1)))
            .expect("granted");
        assert!(!scope.may_get_prompt("review_pr"));
    }

    #[test]
    fn a_removed_grant_stops_opening_its_server() {
        let key = granted(true, true, server(1), "gh", [None, None, None]);
        let narrowed = key.without_server(server(1)).expect("it held the grant");
        assert!(narrowed.scope_on(Surface::Server(server(1))).is_none());
        assert!(narrowed.without_server(server(1)).is_none());
    }

    #[test]
    fn cola_own_tool_list_takes_exact_names_only() {
        assert!(ApiKeyPermissions::new(true, false, Some(vec!["who*".into()]), None).is_err());
    }
}
