// Build configuration of the SDK: how declarations become definitions.
#pragma once

// Non-template bodies live in impl/*.ipp and are compiled once into librstream
// (lib/src_*.cpp). RSTREAM_DECL marks those declarations.
#define RSTREAM_DECL

/// Protocol version this implementation speaks (docs/protocol.md).
#define RSTREAM_PROTOCOL_VERSION "1.4.5"
/// Version of this SDK, engine and CLI.
#define RSTREAM_VERSION "0.1.0"
