#pragma once
// The umbrella header: everything a program needs to run a raregistry node.

#include <raregistry/error.hpp>
#include <raregistry/raft/core.hpp>
#include <raregistry/raft/node.hpp>
#include <raregistry/raft/types.hpp>
#include <raregistry/transport/concepts.hpp>
