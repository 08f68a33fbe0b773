//! yrd-node
