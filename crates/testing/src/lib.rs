//! Test utilities shared by strata's crates: [`tree`] builds random project
//! trees and edits them (every entry kind the native engine keeps), and
//! captures a tree exactly (content, kind, mode, mtime, link target,
//! hardlink grouping, extended attributes) so that a restore can be compared
//! with what was saved.

pub mod tree;
