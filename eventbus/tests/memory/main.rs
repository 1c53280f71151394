//! eventbus in one process (one test binary for the area): the conformance
//! suite on `memory://`, the handler's context, the codec against
//! cloudevents-sdk, delivery details beyond the transport contract,
//! deprecations and routing, routes over several transports.

mod codec;
mod conformance;
mod context;
mod delivery;
mod routes;
mod routing;
mod startup;
mod trace;
mod validation;
