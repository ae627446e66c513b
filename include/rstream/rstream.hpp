// The rstream SDK for agents and dialers. Never includes the engine (edge/).
#pragma once

#include <rstream/config.hpp>
#include <rstream/core/error.hpp>
#include <rstream/dialer/dial.hpp>
#include <rstream/transport/client_config.hpp>
#include <rstream/tunnel/client.hpp>
#include <rstream/tunnel/stream.hpp>
#include <rstream/tunnel/tunnel_properties.hpp>
#include <rstream/tunnel/forward.hpp>
