//! What every surface stands on: the bearer credential, the client's
//! address behind trusted proxies, strict JSON bodies, problem+json answers,
//! HTML escaping and the route helpers. Nothing here knows a surface.

pub(crate) mod bearer;
pub(crate) mod client_ip;
pub(crate) mod html;
pub(crate) mod json;
pub(crate) mod problem;
pub(crate) mod routing;
