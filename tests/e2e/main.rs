//! End-to-end tests: real HTTP vendors on loopback, the real gRPC stack, a
//! real SQLite file, and the real `raccordo` binary where a process matters.

#[cfg(feature = "amqp")]
mod amqp;
mod callbacks;
mod cli;
mod cli_output;
mod cluster;
mod crash;
mod delivery;
mod file_drop;
mod hostile;
mod operations;
mod outcome_data;
mod overload;
mod postgres;
mod practice_api;
mod process;
mod rest_modi;
mod route_render;
mod security;
mod soap;
mod soap_modi;
mod store_tools;
mod support;
mod tls;
mod validation;
