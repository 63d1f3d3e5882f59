#pragma once
// The umbrella header: everything a program needs to run a raregistry node — the Raft
// library, the registry (state machine, replica, user API) and tcp_node. The HTTP debug
// endpoint (Boost.Beast) is separate: <raregistry/debug/routes.hpp>.

#include <raregistry/error.hpp>
#include <raregistry/node.hpp>
#include <raregistry/raft/core.hpp>
#include <raregistry/raft/node.hpp>
#include <raregistry/raft/types.hpp>
#include <raregistry/registry/registry.hpp>
#include <raregistry/registry/replica.hpp>
#include <raregistry/registry/state_machine.hpp>
#include <raregistry/transport/concepts.hpp>
