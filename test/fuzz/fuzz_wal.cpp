// libFuzzer target: the WAL record reader. The input becomes the last segment of a data
// directory; opening it must either recover a log or refuse with corrupt_data — never
// crash, hang or read out of bounds.
#include <raregistry/storage/file.hpp>

#include <cstddef>
#include <cstdint>
#include <fstream>

#include <unistd.h>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    using namespace raregistry;
    namespace fs = std::filesystem;
    static const fs::path dir = fs::temp_directory_path() / ("rr-fuzz-wal-" + std::to_string(::getpid()));
    fs::remove_all(dir);
    fs::create_directories(dir);
    storage::file::options o;
    o.dir = dir;
    o.node_name = "n1";
    o.fsync = false;
    o.initial.voters = {1};
    { storage::file create(o); }  // writes IDENTITY and an empty first segment
    for (auto& de : fs::directory_iterator(dir))
        if (de.path().filename().string().rfind("wal-", 0) == 0) fs::remove(de.path());
    {
        std::ofstream out(dir / "wal-00000000-0000000000000001.log", std::ios::binary);
        out.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size));
    }
    try {
        storage::file s(o);
        auto st = s.load();
        for (std::size_t i = 1; i < st.entries.size(); ++i)
            if (st.entries[i].index != st.entries[i - 1].index + 1) __builtin_trap();
    } catch (const std::system_error& e) {
        if (e.code() != make_error_code(errc::corrupt_data)) __builtin_trap();
    }
    return 0;
}
