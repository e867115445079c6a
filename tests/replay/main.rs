//! `rightsizer replay` and the strategies it scores, offline.

mod replay;
