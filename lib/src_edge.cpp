// Engine I/O: listener, demultiplexer, sessions.
#include <rstream/edge/impl/engine.ipp>
#include <rstream/edge/impl/agent_session.ipp>
#include <rstream/edge/impl/published.ipp>
#include <rstream/edge/impl/upstream_tls.ipp>
