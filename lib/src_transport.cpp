// TLS stream, engine connection and mux/1 connections (OpenSSL + Asio).
#include <rstream/transport/impl/tls_stream.ipp>
#include <rstream/transport/impl/tls_context.ipp>
#include <rstream/framing/impl/mux_connection.ipp>
