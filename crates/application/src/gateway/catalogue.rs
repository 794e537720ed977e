//! Each server's tools as Cola itself last read them: whether each is
//! read-only (which decides what a key's flags allow) and which of its
//! arguments it asks clients to mirror into `Mcp-Param-*` headers.
//!
//! Built only from Cola's own complete reads of the upstream's `tools/list`
//! (every page, in one fetch): what a client happens to list — one page of
//! it, under a cursor of its choosing — never changes it, so no key can make
//! another key's tools unknown.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use cola_protocol::RawMessage;
use serde::Deserialize;
use serde_json::Value;
use serde_json::value::RawValue;
use uuid::Uuid;

use super::ToolLookup;
use super::headers::{HeaderParam, header_params};

/// How long a server's list of tools is trusted for read-only decisions.
pub const CATALOGUE_TTL: Duration = Duration::from_secs(60);
/// The least time between two fetches of one server's catalogue, so that
/// calls of a tool the upstream does not offer cannot make Cola ask the
/// upstream on every request.
pub const CATALOGUE_REFETCH_INTERVAL: Duration = Duration::from_secs(5);
/// A catalogue older than this is fetched again by the next call that uses
/// it, while the others go on deciding with it: under steady use a server's
/// catalogue never reaches [`CATALOGUE_TTL`] and becomes unknown.
pub const CATALOGUE_REFRESH_AFTER: Duration = Duration::from_secs(30);
/// Servers whose catalogue is kept; the oldest is dropped past this.
const MAX_CATALOGUES: usize = 10_000;

/// One tool as the catalogue keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogueTool {
    pub name: String,
    pub read_only: bool,
    /// The arguments its `inputSchema` marks `x-mcp-header`.
    pub header_params: Arc<[HeaderParam]>,
}

/// One page of an upstream's `tools/list` result, as the catalogue reads it.
#[derive(Debug, Default)]
pub struct CataloguePage {
    pub tools: Vec<CatalogueTool>,
    /// The cursor of the next page, if there is one.
    pub next_cursor: Option<String>,
}

#[derive(Deserialize)]
struct ListedTool<'a> {
    #[serde(borrow)]
    name: std::borrow::Cow<'a, str>,
    #[serde(default)]
    annotations: Option<Annotations>,
    #[serde(borrow, default, rename = "inputSchema")]
    input_schema: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct Annotations {
    #[serde(default, rename = "readOnlyHint")]
    read_only_hint: Option<bool>,
}

impl CataloguePage {
    /// A `tools/list` result's raw text, read item by item (a tool that
    /// cannot be read is left out, and so cannot be called by a key whose
    /// flags depend on it). `None` when it is not a result with a list.
    #[must_use]
    pub fn read(result: &str) -> Option<Self> {
        let object = RawMessage::parse(result)?;
        let items: Vec<&RawValue> = serde_json::from_str(object.get("tools")?.get()).ok()?;
        let tools = items
            .into_iter()
            .filter_map(|item| {
                let tool: ListedTool<'_> = serde_json::from_str(item.get()).ok()?;
                let header_params = tool
                    .input_schema
                    .and_then(|schema| serde_json::from_str::<Value>(schema.get()).ok())
                    .map_or_else(Vec::new, |schema| header_params(&schema));
                Some(CatalogueTool {
                    name: tool.name.into_owned(),
                    read_only: tool
                        .annotations
                        .and_then(|annotations| annotations.read_only_hint)
                        .unwrap_or(false),
                    header_params: header_params.into(),
                })
            })
            .collect();
        let next_cursor = object
            .get("nextCursor")
            .and_then(|cursor| serde_json::from_str::<String>(cursor.get()).ok());
        Some(Self { tools, next_cursor })
    }
}

#[derive(Debug)]
struct Catalogue {
    tools: HashMap<String, CatalogueTool>,
    listed_at: Instant,
}

/// Per instance; a stale or missing catalogue is fetched again before a
/// decision that needs it.
#[derive(Debug, Default)]
pub struct ToolCatalogue {
    servers: Mutex<HashMap<Uuid, Arc<Catalogue>>>,
    /// Per server, when its catalogue was last fetched, behind the lock a
    /// fetch holds: the calls that need the catalogue wait for the fetch
    /// under way and then decide on its result, and fetches are at most one
    /// per [`CATALOGUE_REFETCH_INTERVAL`].
    fetches: Mutex<HashMap<Uuid, FetchSlot>>,
}

type FetchSlot = Arc<tokio::sync::Mutex<Option<Instant>>>;

/// The turn at fetching one server's catalogue: while it is held, nobody
/// else fetches it.
#[derive(Debug)]
pub struct FetchTurn(tokio::sync::OwnedMutexGuard<Option<Instant>>);

impl FetchTurn {
    /// Whether a fetch may be made now (none in the last
    /// [`CATALOGUE_REFETCH_INTERVAL`]); claims it if so.
    #[must_use]
    pub fn claim(&mut self) -> bool {
        if self
            .0
            .is_some_and(|at| at.elapsed() < CATALOGUE_REFETCH_INTERVAL)
        {
            return false;
        }
        *self.0 = Some(Instant::now());
        true
    }
}

impl ToolCatalogue {
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    fn current(&self, server: Uuid) -> Option<Arc<Catalogue>> {
        self.servers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&server)
            .filter(|catalogue| catalogue.listed_at.elapsed() < CATALOGUE_TTL)
            .cloned()
    }

    /// What the catalogue of `server` says about `name`.
    #[must_use]
    pub fn lookup(&self, server: Uuid, name: &str) -> ToolLookup {
        match self.current(server) {
            Some(catalogue) => match catalogue.tools.get(name) {
                Some(tool) => ToolLookup::Listed {
                    read_only: tool.read_only,
                },
                None => ToolLookup::Absent,
            },
            None => ToolLookup::Unknown,
        }
    }

    /// The arguments the tool `name` of `server` mirrors into headers:
    /// `None` when the catalogue does not know the tool.
    #[must_use]
    pub fn header_params(&self, server: Uuid, name: &str) -> Option<Arc<[HeaderParam]>> {
        self.current(server)?
            .tools
            .get(name)
            .map(|tool| Arc::clone(&tool.header_params))
    }

    /// The turn at fetching the catalogue of `server`, once the fetch under
    /// way (if any) has ended. A caller that needs the catalogue takes it,
    /// looks again (the fetch it waited for may have answered), and fetches
    /// only if it is still unknown.
    pub async fn fetch_turn(&self, server: Uuid) -> FetchTurn {
        FetchTurn(self.fetch_slot(server).lock_owned().await)
    }

    /// The turn, unless a fetch is under way (for a refresh ahead of
    /// expiry, which nobody waits for).
    #[must_use]
    pub fn try_fetch_turn(&self, server: Uuid) -> Option<FetchTurn> {
        self.fetch_slot(server).try_lock_owned().ok().map(FetchTurn)
    }

    fn fetch_slot(&self, server: Uuid) -> FetchSlot {
        let mut fetches = self.fetches.lock().unwrap_or_else(PoisonError::into_inner);
        if fetches.len() >= MAX_CATALOGUES && !fetches.contains_key(&server) {
            // Dropped: slots nobody holds or waits for, whose last fetch no
            // longer limits the next.
            fetches.retain(|_, slot| {
                Arc::strong_count(slot) > 1
                    || slot.try_lock().is_ok_and(|last| {
                        last.is_some_and(|at| at.elapsed() < CATALOGUE_REFETCH_INTERVAL)
                    })
            });
        }
        Arc::clone(fetches.entry(server).or_default())
    }

    /// Whether the catalogue of `server` is known but old enough to be
    /// fetched again ahead of its expiry.
    #[must_use]
    pub fn refresh_due(&self, server: Uuid) -> bool {
        self.servers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&server)
            .is_some_and(|catalogue| {
                let age = catalogue.listed_at.elapsed();
                age >= CATALOGUE_REFRESH_AFTER && age < CATALOGUE_TTL
            })
    }

    /// Records the server's complete list of tools (every page of one of
    /// Cola's own reads).
    pub fn record(&self, server: Uuid, tools: Vec<CatalogueTool>) {
        let tools = tools
            .into_iter()
            .map(|tool| (tool.name.clone(), tool))
            .collect();
        let mut servers = self.servers.lock().unwrap_or_else(PoisonError::into_inner);
        if servers.len() >= MAX_CATALOGUES && !servers.contains_key(&server) {
            let oldest = servers
                .iter()
                .min_by_key(|(_, catalogue)| catalogue.listed_at)
                .map(|(id, _)| *id);
            if let Some(oldest) = oldest {
                servers.remove(&oldest);
            }
        }
        servers.insert(
            server,
            Arc::new(Catalogue {
                tools,
                listed_at: Instant::now(),
            }),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(text: &str) -> CataloguePage {
        CataloguePage::read(text).expect("a page")
    }

    #[test]
    fn a_page_is_read_for_names_annotations_and_mirrored_arguments() {
        let read = page(
            r#"{"tools":[
                {"name":"search","annotations":{"readOnlyHint":true},
                 "inputSchema":{"type":"object","properties":{"region":{"type":"string","x-mcp-header":"Region"}}}},
                {"name":"delete"},
                {"title":"nameless"},
                {"name":"twice","name":"again"}
            ],"nextCursor":"2"}"#,
        );
        let names: Vec<_> = read
            .tools
            .iter()
            .map(|tool| (tool.name.as_str(), tool.read_only))
            .collect();
        assert_eq!(names, [("search", true), ("delete", false)]);
        assert_eq!(read.tools[0].header_params.len(), 1);
        assert_eq!(read.next_cursor.as_deref(), Some("2"));
        assert!(CataloguePage::read(r#"{"tools":"no"}"#).is_none());
    }

    #[test]
    fn the_catalogue_knows_listed_tools_and_refetches_at_most_every_interval() {
        let catalogue = ToolCatalogue::new();
        let server = Uuid::new_v4();
        assert_eq!(catalogue.lookup(server, "search"), ToolLookup::Unknown);
        catalogue.record(
            server,
            page(r#"{"tools":[{"name":"search","annotations":{"readOnlyHint":true}}]}"#).tools,
        );
        assert_eq!(
            catalogue.lookup(server, "search"),
            ToolLookup::Listed { read_only: true }
        );
        assert_eq!(catalogue.lookup(server, "other"), ToolLookup::Absent);
        assert!(catalogue.header_params(server, "other").is_none());
        assert_eq!(
            catalogue.header_params(server, "search").map(|p| p.len()),
            Some(0)
        );
        let mut turn = catalogue.try_fetch_turn(server).expect("nobody fetches");
        assert!(turn.claim());
        assert!(!turn.claim());
        drop(turn);
        let mut next = catalogue.try_fetch_turn(server).expect("nobody fetches");
        assert!(!next.claim(), "at most one fetch per interval");
    }

    #[test]
    fn one_fetch_turn_per_server_and_a_fresh_catalogue_needs_no_refresh() {
        let catalogue = ToolCatalogue::new();
        let (server, other) = (Uuid::new_v4(), Uuid::new_v4());
        let held = catalogue.try_fetch_turn(server).expect("free");
        assert!(
            catalogue.try_fetch_turn(server).is_none(),
            "one fetch at a time"
        );
        assert!(catalogue.try_fetch_turn(other).is_some(), "per server");
        drop(held);
        assert!(catalogue.try_fetch_turn(server).is_some());
        assert!(
            !catalogue.refresh_due(server),
            "nothing known, nothing to refresh"
        );
        catalogue.record(server, page(r#"{"tools":[{"name":"search"}]}"#).tools);
        assert!(!catalogue.refresh_due(server), "just listed");
    }
}
