// The Vulkan interop header compiles as C++ (extern "C", no C-only constructs).
#include "ssmax/ssmax_vulkan.h"

int main()
{
    ssmax_vulkan_device d = {};
    ssmax_vulkan_requirements r = {};
    (void)d;
    (void)r;
    return SSMAX_OK;
}
