// TLS stream and engine connection (OpenSSL + Asio).
#include <rstream/transport/impl/tls_stream.ipp>
#include <rstream/transport/impl/tls_context.ipp>
