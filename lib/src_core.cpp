// Non-template bodies of the core, configuration and framing layers (no Asio I/O here).
#include <rstream/core/impl/log.ipp>
#include <rstream/core/impl/text.ipp>
#include <rstream/core/impl/error.ipp>
#include <rstream/framing/impl/frame_codec.ipp>
#include <rstream/framing/impl/messages.ipp>
#include <rstream/core/impl/duration.ipp>
#include <rstream/transport/impl/engine_address.ipp>
#include <rstream/transport/impl/client_config.ipp>
#include <rstream/transport/impl/config_file.ipp>
#include <rstream/framing/impl/mux.ipp>
