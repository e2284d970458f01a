//! The catalog of published releases: its model in memory ([`model`]), its folder on disk
//! ([`load()`], [`save_module`], [`store`]), the dependency syntax ([`Requirement`]) and the
//! channels and rollouts of releases ([`rollout`]).

pub mod error;
pub mod load;
pub mod model;
pub mod requirement;
pub mod rollout;
pub(crate) mod save;
pub mod store;

pub use error::CatalogError;
pub use load::load;
pub use model::{Blob, Catalog, DeletedFile, DeltaRef, Module, Package, PatchRef, Release, ReleaseFile, Settings};
pub use requirement::Requirement;
pub use rollout::{HaltRule, Rollout, RolloutState, RolloutStep, Schedule};
pub use save::save_module;
pub use store::{store_blob, store_file};
