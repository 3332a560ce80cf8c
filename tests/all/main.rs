//! Integration tests: real HTTP against hosts on 127.0.0.1, plugins built from source.

mod admin;
mod cache;
mod containment;
mod contract;
mod edge;
mod fuzz;
mod hot_swap;
mod http;
mod languages;
mod limits;
mod loading;
mod native;
mod openapi;
mod outbound;
mod promote;
mod replay;
mod reuse;
mod sandbox;
mod store;
mod support;
mod wit_reference;
