// Engine pieces without I/O: tokens, PKI, configuration, validation, registry.
#include <rstream/edge/impl/token.ipp>
#include <rstream/edge/impl/registry.ipp>
#include <rstream/edge/impl/pki.ipp>
#include <rstream/edge/impl/state_dir.ipp>
#include <rstream/edge/impl/engine_config.ipp>
#include <rstream/edge/impl/client_hello.ipp>
#include <rstream/edge/impl/tunnel_validation.ipp>
#include <rstream/edge/impl/http_rewrite.ipp>
