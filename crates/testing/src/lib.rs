//! Test utilities shared by strata's crates: [`tree`] builds random project
//! trees and edits them (every entry kind the native engine keeps), and
//! captures a tree exactly (content, kind, mode, mtime, link target,
//! hardlink grouping, extended attributes) so that a restore can be compared
//! with what was saved; [`privilege`] runs tests a second time as an
//! unprivileged user when the suite runs as root.

pub mod cluster;
pub mod filesystems;
pub mod privilege;
pub mod proxy;
pub mod tree;
