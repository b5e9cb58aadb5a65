//! Inspecting layer stacks from the layer directories themselves (each layer a changeset,
//! read relative to its root fd, never following a symlink): which layer a path comes
//! from ([`which`]), and what each layer adds, changes, deletes and ships for nothing
//! ([`stats`]). The `layerfs which` and `layerfs layers` commands print them.

pub mod stats;
pub mod which;
