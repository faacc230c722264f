//! Typed client and command-line tool (work in progress).
