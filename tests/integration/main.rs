//! Integration tests: the real `gateway` binary on real sockets against a real PostgreSQL.

mod harness;

mod adapters;
mod author_loop;
mod automation;
mod bad_input;
mod campaigns;
mod console;
mod containment_leaks;
mod contract;
mod contract_wit;
mod credentials;
mod crm;
mod faults;
mod history;
mod hostile_clients;
mod key_ring;
mod lifecycle;
mod metrics;
mod neighbours;
mod openapi;
mod optimizer;
mod optimizer_llm;
mod limits;
mod outbound;
mod plugin_storage;
mod plugin_failures;
mod provider_webhooks;
mod providers;
mod registry;
mod registry_policy;
mod rls;
mod shared_limits;
mod webhooks;
mod wit_versions;
