// Replays a fuzz target's checked-in corpus as an ordinary test (built with g++, no
// libFuzzer): every file in the corpus directories given as arguments goes through the
// target once. Exits non-zero if a corpus directory is missing or empty.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size);

int main(int argc, char** argv) {
    std::size_t inputs = 0;
    for (int i = 1; i < argc; ++i) {
        for (auto& de : std::filesystem::directory_iterator(argv[i])) {
            std::ifstream in(de.path(), std::ios::binary);
            std::string bytes((std::istreambuf_iterator<char>(in)), {});
            LLVMFuzzerTestOneInput(reinterpret_cast<const std::uint8_t*>(bytes.data()), bytes.size());
            ++inputs;
        }
    }
    std::printf("replayed %zu corpus inputs\n", inputs);
    return inputs > 0 ? 0 : 1;
}
