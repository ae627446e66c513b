// Builds against the installed package and exercises a piece of it that needs no engine.
#include <rstream/rstream.hpp>

#include <cstdio>

int main() {
    auto addr = rstream::transport::parse_engine_address("engine.example.com");
    if (!addr || addr->port != 443)
        return 1;
    rstream::tunnel_properties p;
    p.name = "web-7";
    if (rstream::forwarding_address(p) != "rstrm://web-7")
        return 1;
    std::printf("consumer ok: %s %s\n", rstream::transport::to_string(*addr).c_str(),
                rstream::forwarding_address(p).c_str());
    return 0;
}
