// The engine's HTTP/2 downstream (nghttp2): kept in its own translation unit so only it
// needs nghttp2's header.
#include <rstream/edge/impl/http2_proxy.ipp>
#include <rstream/edge/impl/http2_upstream.ipp>
