//! The management REST API and its neighbours under `/api` and `/.well-known`:
//! thin handlers that extract, call a service, and map; the OpenAPI document
//! that describes them.

pub(crate) mod api_docs;
pub(crate) mod health;
pub(crate) mod keys;
pub(crate) mod openapi;
pub(crate) mod report;
pub(crate) mod secret_scanning;
pub(crate) mod servers;
pub(crate) mod users;
pub(crate) mod verify;
