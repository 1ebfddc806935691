//! End-to-end tests: real HTTP vendors on loopback, the real gRPC stack, a
//! real SQLite file, and the real `raccordo` binary where a process matters.

mod delivery;
mod practice_api;
mod process;
mod soap;
mod support;
mod validation;
