// The compiled part of the HTTP/2 proxy (edge/http2_proxy.hpp): the nghttp2 session and the
// message translation. Included once, by lib/src_edge_http2.cpp.
#pragma once

#include <rstream/edge/impl/http2_session.ipp>
#include <rstream/edge/impl/http2_messages.ipp>
