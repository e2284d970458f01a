//! The catalog of published releases (S1): its model in memory ([`model`]).

pub mod model;

pub use model::{
    Blob, Catalog, DeletedFile, DeltaRef, Module, Package, Release, ReleaseFile, Settings,
};
