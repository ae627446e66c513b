// Control channel, tunnels, streams, dialer (Asio coroutines).
#include <rstream/tunnel/impl/tunnel_properties.ipp>
#include <rstream/tunnel/impl/control_channel.ipp>
#include <rstream/dialer/impl/dial.ipp>
#include <rstream/tunnel/impl/proxy_protocol.ipp>
#include <rstream/tunnel/impl/http_observer.ipp>
#include <rstream/tunnel/impl/forward.ipp>
