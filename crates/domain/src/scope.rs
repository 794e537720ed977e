//! A key's scope: what a request made with the key may reach. Every "may it?"
//! question of a request is answered here and nowhere else — listing and
//! calling, Cola's own endpoint and (later) a tenant's server alike — so a
//! path that forgets to ask cannot widen access, and "listed" and "usable"
//! can never disagree.

use crate::permissions::{ApiKeyPermissions, ResourcePattern, ToolName};

/// Where a request goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Surface<'a> {
    /// Cola's own MCP endpoint, `/mcp`.
    Cola,
    /// A tenant's MCP server through the gateway, by its slug.
    Server(&'a str),
}

/// What a key may use on one surface: the key's read/write flags and that
/// surface's allow-lists (`None` = whatever the flags allow, empty = nothing).
#[derive(Debug, Clone, Copy)]
pub struct SurfaceScope<'a> {
    read: bool,
    write: bool,
    tools: Option<&'a [ToolName]>,
    resources: Option<&'a [ResourcePattern]>,
    prompts: Option<&'a [ToolName]>,
}

impl ApiKeyPermissions {
    /// The key's scope on `surface`, or `None` when the key may not reach it
    /// at all. A tenant's server is reachable only through a grant naming
    /// it; keys hold no grants yet, so no server is (deny by default).
    #[must_use]
    pub fn scope_on(&self, surface: Surface<'_>) -> Option<SurfaceScope<'_>> {
        match surface {
            Surface::Cola => Some(SurfaceScope {
                read: self.read(),
                write: self.write(),
                tools: self.allowed_tools(),
                resources: self.allowed_resources(),
                // Cola serves no prompts of its own; a grant's list will.
                prompts: None,
            }),
            Surface::Server(_) => None,
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

fn named(list: Option<&[ToolName]>, name: &str) -> bool {
    list.is_none_or(|names| names.iter().any(|allowed| allowed.as_str() == name))
}

fn matches_any(list: Option<&[ResourcePattern]>, uri: &str) -> bool {
    list.is_none_or(|patterns| patterns.iter().any(|pattern| pattern.matches(uri)))
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn no_tenant_server_is_reachable_without_a_grant() {
        let everything = perms(true, true, None, None);
        assert!(everything.scope_on(Surface::Server("github")).is_none());
    }
}
