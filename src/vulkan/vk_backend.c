/*
 * The Vulkan backend: loader (dlopen, so a missing loader only empties the device list), instance
 * with the optional validation layer and our debug messenger, physical-device listing, device and
 * compute queue, buffers (mapped where memory is unified, device-local plus staging elsewhere),
 * pipelines from the embedded SPIR-V with specialization constants, and the attention paths:
 * fused, split-KV + merge, and unfused (QK^T, softmax, PV) with chunking to the binding range.
 *
 * No global Vulkan function pointers: each instance and device has its own table.
 */
#include <dlfcn.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define VK_NO_PROTOTYPES
#include <vulkan/vulkan.h>

#include "../../shaders/attn_iface.h"
#include "../backend.h"
#include "vk_shaders.h"

#define INSTANCE_FNS(X)                                                                            \
    X(vkDestroyInstance)                                                                           \
    X(vkEnumeratePhysicalDevices)                                                                  \
    X(vkGetPhysicalDeviceProperties)                                                               \
    X(vkGetPhysicalDeviceProperties2)                                                              \
    X(vkGetPhysicalDeviceFeatures2)                                                                \
    X(vkGetPhysicalDeviceQueueFamilyProperties)                                                    \
    X(vkGetPhysicalDeviceMemoryProperties)                                                         \
    X(vkCreateDevice)                                                                              \
    X(vkGetDeviceProcAddr)

#define DEVICE_FNS(X)                                                                              \
    X(vkDestroyDevice)                                                                             \
    X(vkGetDeviceQueue)                                                                            \
    X(vkCreateBuffer)                                                                              \
    X(vkDestroyBuffer)                                                                             \
    X(vkGetBufferMemoryRequirements)                                                               \
    X(vkAllocateMemory)                                                                            \
    X(vkFreeMemory)                                                                                \
    X(vkBindBufferMemory)                                                                          \
    X(vkMapMemory)                                                                                 \
    X(vkUnmapMemory)                                                                               \
    X(vkCreateCommandPool)                                                                         \
    X(vkDestroyCommandPool)                                                                        \
    X(vkAllocateCommandBuffers)                                                                    \
    X(vkBeginCommandBuffer)                                                                        \
    X(vkEndCommandBuffer)                                                                          \
    X(vkResetCommandBuffer)                                                                        \
    X(vkCmdCopyBuffer)                                                                             \
    X(vkCmdPipelineBarrier)                                                                        \
    X(vkCmdBindPipeline)                                                                           \
    X(vkCmdBindDescriptorSets)                                                                     \
    X(vkCmdPushConstants)                                                                          \
    X(vkCmdDispatch)                                                                               \
    X(vkCmdResetQueryPool)                                                                         \
    X(vkCmdWriteTimestamp)                                                                         \
    X(vkQueueSubmit)                                                                               \
    X(vkCreateFence)                                                                               \
    X(vkDestroyFence)                                                                              \
    X(vkWaitForFences)                                                                             \
    X(vkResetFences)                                                                               \
    X(vkCreateQueryPool)                                                                           \
    X(vkDestroyQueryPool)                                                                          \
    X(vkGetQueryPoolResults)                                                                       \
    X(vkCreateShaderModule)                                                                        \
    X(vkDestroyShaderModule)                                                                       \
    X(vkCreateComputePipelines)                                                                    \
    X(vkDestroyPipeline)                                                                           \
    X(vkCreatePipelineLayout)                                                                      \
    X(vkDestroyPipelineLayout)                                                                     \
    X(vkCreateDescriptorSetLayout)                                                                 \
    X(vkDestroyDescriptorSetLayout)                                                                \
    X(vkCreateDescriptorPool)                                                                      \
    X(vkDestroyDescriptorPool)                                                                     \
    X(vkAllocateDescriptorSets)                                                                    \
    X(vkResetDescriptorPool)                                                                       \
    X(vkUpdateDescriptorSets)                                                                      \
    X(vkDeviceWaitIdle)

#define DECL(f) PFN_##f f;

struct vk_phys {
    VkPhysicalDevice pd;
    int loop_limited; // Mesa llvmpipe: 65535 loop iterations per invocation, all loops together
    VkPhysicalDeviceProperties props;
    uint32_t subgroup_size;
    int shuffle; // subgroupShuffle in compute shaders
    uint64_t max_alloc;
};

struct vk_inst {
    int owned; // a debug context's own instance, destroyed with it; else the shared one
    PFN_vkGetInstanceProcAddr gipa;
    VkInstance inst;
    VkDebugUtilsMessengerEXT messenger;
    PFN_vkDestroyDebugUtilsMessengerEXT destroy_messenger;
    INSTANCE_FNS(DECL)
    struct ssmax_device_info *infos;
    struct vk_phys *phys;
    int ndev;
};

struct vk_buf {
    VkBuffer buf;
    VkDeviceMemory mem;
    void *map; // persistently mapped when host-visible, else NULL (staging copies)
    VkDeviceSize size;
};

struct vk_pipe {
    uint32_t key[8];
    VkPipeline pipe;
};

struct vk_dev {
    struct ssmax_dev base;
    struct vk_inst *vi;
    struct vk_phys *ph;
    VkDevice dev;
    DEVICE_FNS(DECL)
    VkQueue queue;
    uint32_t qfam;
    VkCommandPool pool;
    VkCommandBuffer cmd;
    VkFence fence;
    VkQueryPool qpool;
    uint64_t ts_mask;
    VkPhysicalDeviceMemoryProperties mem;
    int unified;         // user buffers are host-visible and mapped
    VkDescriptorSetLayout dsl;
    VkPipelineLayout layout;
    VkDescriptorPool dpool;
    struct vk_pipe *pipes;
    int npipes, cap_pipes;
    struct vk_buf staging, coef, dummy, scr0, scr1;
};

/* ---- errors ---- */

static int vk_err(struct ssmax_context *ctx, VkResult r, const char *what)
{
    int code = SSMAX_ERR_BACKEND;
    if (r == VK_ERROR_OUT_OF_HOST_MEMORY)
        code = SSMAX_ERR_OUT_OF_HOST_MEMORY;
    else if (r == VK_ERROR_OUT_OF_DEVICE_MEMORY)
        code = SSMAX_ERR_OUT_OF_DEVICE_MEMORY;
    else if (r == VK_ERROR_DEVICE_LOST)
        code = SSMAX_ERR_DEVICE_LOST;
    const char *name = r == VK_ERROR_DEVICE_LOST            ? " (device lost)"
                       : r == VK_ERROR_OUT_OF_DEVICE_MEMORY ? " (out of device memory)"
                       : r == VK_ERROR_OUT_OF_HOST_MEMORY   ? " (out of host memory)"
                                                            : "";
    return ssmax_set_error(ctx, code, "vulkan: %s failed: VkResult %d%s", what, (int)r, name);
}

/* ---- instance ---- */

static VKAPI_ATTR VkBool32 VKAPI_CALL messenger_cb(VkDebugUtilsMessageSeverityFlagBitsEXT sev,
                                                   VkDebugUtilsMessageTypeFlagsEXT type,
                                                   const VkDebugUtilsMessengerCallbackDataEXT *d,
                                                   void *priv)
{
    (void)type;
    struct ssmax_context *ctx = priv;
    if (sev & VK_DEBUG_UTILS_MESSAGE_SEVERITY_ERROR_BIT_EXT) {
        atomic_fetch_add(&ctx->validation_errors, 1);
        ssmax_log(ctx, SSMAX_LOG_ERR, "vulkan validation: %s", d->pMessage);
    } else if (sev & VK_DEBUG_UTILS_MESSAGE_SEVERITY_WARNING_BIT_EXT) {
        ssmax_log(ctx, SSMAX_LOG_WARN, "vulkan validation: %s", d->pMessage);
    }
    return VK_FALSE;
}

static int has_layer(PFN_vkGetInstanceProcAddr gipa, const char *name)
{
    PFN_vkEnumerateInstanceLayerProperties f =
        (PFN_vkEnumerateInstanceLayerProperties)gipa(NULL, "vkEnumerateInstanceLayerProperties");
    uint32_t n = 0;
    if (!f || f(&n, NULL) != VK_SUCCESS || !n)
        return 0;
    VkLayerProperties *l = calloc(n, sizeof(*l));
    int found = 0;
    if (l && f(&n, l) == VK_SUCCESS)
        for (uint32_t i = 0; i < n; i++)
            found |= !strcmp(l[i].layerName, name);
    free(l);
    return found;
}

static int has_inst_ext(PFN_vkGetInstanceProcAddr gipa, const char *layer, const char *name)
{
    PFN_vkEnumerateInstanceExtensionProperties f = (PFN_vkEnumerateInstanceExtensionProperties)gipa(
        NULL, "vkEnumerateInstanceExtensionProperties");
    uint32_t n = 0;
    if (!f || f(layer, &n, NULL) != VK_SUCCESS || !n)
        return 0;
    VkExtensionProperties *e = calloc(n, sizeof(*e));
    int found = 0;
    if (e && f(layer, &n, e) == VK_SUCCESS)
        for (uint32_t i = 0; i < n; i++)
            found |= !strcmp(e[i].extensionName, name);
    free(e);
    return found;
}

static enum ssmax_device_type map_type(VkPhysicalDeviceType t)
{
    switch (t) {
    case VK_PHYSICAL_DEVICE_TYPE_INTEGRATED_GPU: return SSMAX_DEVICE_INTEGRATED_GPU;
    case VK_PHYSICAL_DEVICE_TYPE_DISCRETE_GPU: return SSMAX_DEVICE_DISCRETE_GPU;
    case VK_PHYSICAL_DEVICE_TYPE_VIRTUAL_GPU: return SSMAX_DEVICE_VIRTUAL_GPU;
    case VK_PHYSICAL_DEVICE_TYPE_CPU: return SSMAX_DEVICE_CPU;
    default: return SSMAX_DEVICE_OTHER;
    }
}

static const char *vendor_name(uint32_t id)
{
    switch (id) {
    case 0x1002: return "AMD";
    case 0x10de: return "NVIDIA";
    case 0x8086: return "Intel";
    case 0x13b5: return "ARM";
    case 0x5143: return "Qualcomm";
    case 0x1010: return "Imagination";
    case 0x106b: return "Apple";
    case 0x10005: return "Mesa";
    default: return "unknown";
    }
}

static void fill_info(struct vk_inst *vi, int idx)
{
    struct vk_phys *ph = &vi->phys[idx];
    struct ssmax_device_info *d = &vi->infos[idx];
    VkPhysicalDeviceDriverProperties drv = { .sType =
                                                 VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_DRIVER_PROPERTIES };
    VkPhysicalDeviceMaintenance3Properties m3 = {
        .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_MAINTENANCE_3_PROPERTIES
    };
    VkPhysicalDeviceSubgroupProperties sg = {
        .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SUBGROUP_PROPERTIES, .pNext = &m3
    };
    VkPhysicalDeviceProperties2 p2 = { .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_PROPERTIES_2,
                                       .pNext = &sg };
    vi->vkGetPhysicalDeviceProperties(ph->pd, &ph->props);
    int have12 = ph->props.apiVersion >= VK_API_VERSION_1_2;
    if (have12)
        m3.pNext = &drv;
    vi->vkGetPhysicalDeviceProperties2(ph->pd, &p2);
    VkPhysicalDevice16BitStorageFeatures s16 = {
        .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_16BIT_STORAGE_FEATURES
    };
    VkPhysicalDeviceShaderFloat16Int8Features f16 = {
        .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SHADER_FLOAT16_INT8_FEATURES, .pNext = &s16
    };
    VkPhysicalDeviceFeatures2 f2 = { .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_FEATURES_2,
                                     .pNext = have12 ? (void *)&f16 : (void *)&s16 };
    vi->vkGetPhysicalDeviceFeatures2(ph->pd, &f2);
    VkPhysicalDeviceMemoryProperties mp;
    vi->vkGetPhysicalDeviceMemoryProperties(ph->pd, &mp);

    const VkPhysicalDeviceLimits *lim = &ph->props.limits;
    memset(d, 0, sizeof(*d));
    d->backend = SSMAX_BACKEND_VULKAN;
    d->index = idx;
    d->type = map_type(ph->props.deviceType);
    if (ph->props.deviceType == VK_PHYSICAL_DEVICE_TYPE_CPU) {
        // Vulkan reports no core count. CPU drivers (lavapipe: LP_NUM_THREADS, default the online
        // CPUs) run one workgroup per host thread.
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        d->compute_units = n > 0 ? (uint32_t)n : 1;
    }
    snprintf(d->name, sizeof(d->name), "%s", ph->props.deviceName);
    snprintf(d->vendor, sizeof(d->vendor), "%s", vendor_name(ph->props.vendorID));
    uint32_t v = ph->props.apiVersion;
    snprintf(d->api_version, sizeof(d->api_version), "Vulkan %u.%u.%u", VK_API_VERSION_MAJOR(v),
             VK_API_VERSION_MINOR(v), VK_API_VERSION_PATCH(v));
    uint32_t dv = ph->props.driverVersion;
    if (have12 && drv.driverInfo[0])
        snprintf(d->driver_version, sizeof(d->driver_version), "%.60s %.60s", drv.driverName,
                 drv.driverInfo);
    else if (ph->props.vendorID == 0x10de)
        snprintf(d->driver_version, sizeof(d->driver_version), "%u.%u.%u.%u", dv >> 22,
                 (dv >> 14) & 0xff, (dv >> 6) & 0xff, dv & 0x3f);
    else
        snprintf(d->driver_version, sizeof(d->driver_version), "%u.%u.%u", VK_API_VERSION_MAJOR(dv),
                 VK_API_VERSION_MINOR(dv), VK_API_VERSION_PATCH(dv));
    d->vendor_id = ph->props.vendorID;
    d->device_id = ph->props.deviceID;
    d->subgroup_size = sg.subgroupSize;
    d->subgroups = (sg.supportedStages & VK_SHADER_STAGE_COMPUTE_BIT) &&
                   (sg.supportedOperations & VK_SUBGROUP_FEATURE_ARITHMETIC_BIT);
    d->max_workgroup_size = lim->maxComputeWorkGroupInvocations;
    d->shared_memory = lim->maxComputeSharedMemorySize;
    d->max_buffer_size = lim->maxStorageBufferRange;
    d->max_alloc_size = m3.maxMemoryAllocationSize;
    for (uint32_t h = 0; h < mp.memoryHeapCount; h++)
        if (mp.memoryHeaps[h].flags & VK_MEMORY_HEAP_DEVICE_LOCAL_BIT)
            d->global_memory += mp.memoryHeaps[h].size;
    d->fp16_arith = have12 && f16.shaderFloat16;
    d->fp16_storage = s16.storageBuffer16BitAccess;
    ph->subgroup_size = sg.subgroupSize;
    ph->shuffle = (sg.supportedStages & VK_SHADER_STAGE_COMPUTE_BIT) &&
                  (sg.supportedOperations & VK_SUBGROUP_FEATURE_SHUFFLE_BIT);
    ph->loop_limited = have12 && drv.driverID == VK_DRIVER_ID_MESA_LLVMPIPE;
    ph->max_alloc = m3.maxMemoryAllocationSize;
}

/* ---- the process-wide driver ----
 * The loader is opened once per process, under a mutex, and kept until exit; so is the instance
 * of the contexts without debug and its physical-device list, shared by all of them. A context
 * owns only its VkDevice and what hangs from it (vk_open). Loading the loader, creating an
 * instance and enumerating the drivers for every context made concurrent creation race inside
 * the drivers, and each load / unload left loader and driver state behind (ICD manifests, driver
 * globals that dlclose does not give back: with OpenCL's, about 300 bytes of heap a context, see
 * test_drivers rss), so the state is not released with the last context either: the next
 * context would load it all again.
 *
 * A context with debug set gets an instance of its own, with the validation layer and a debug
 * messenger whose user data is that context: validation errors count per context, and a message
 * about one context's device never lands in another's count. */

struct vk_loader {
    void *lib;
    PFN_vkGetInstanceProcAddr gipa;
};

static pthread_mutex_t vk_lock = PTHREAD_MUTEX_INITIALIZER;
static struct vk_loader vk_ld; // lib NULL: no loader (vk_why says why)
static int vk_ld_tried;
static struct vk_inst *vk_shared; // the instance of contexts without debug, once vk_sh_tried
static int vk_sh_tried;
static char vk_why[256];

static void inst_free(struct vk_inst *vi)
{
    if (vi->messenger)
        vi->destroy_messenger(vi->inst, vi->messenger, NULL);
    if (vi->inst && vi->vkDestroyInstance)
        vi->vkDestroyInstance(vi->inst, NULL);
    else if (vi->inst) {
        PFN_vkDestroyInstance d = (PFN_vkDestroyInstance)vi->gipa(vi->inst, "vkDestroyInstance");
        if (d)
            d(vi->inst, NULL);
    }
    free(vi->phys);
    free(vi->infos);
    free(vi);
}

/* Creates an instance and lists its devices. ctx is the debug context that owns it (layer and
 * messenger), or NULL for the shared instance. *out is NULL, with why set, when Vulkan is not
 * usable; the return is an error only for out of memory. */
static int inst_create(struct ssmax_context *ctx, struct vk_inst **out, char *why, size_t wn)
{
    *out = NULL;
    struct vk_inst *vi = calloc(1, sizeof(*vi));
    if (!vi)
        return SSMAX_ERR_OUT_OF_HOST_MEMORY;
    vi->gipa = vk_ld.gipa;
    PFN_vkCreateInstance create = (PFN_vkCreateInstance)vi->gipa(NULL, "vkCreateInstance");
    if (!create) {
        snprintf(why, wn, "vulkan: the loader has no vkCreateInstance");
        inst_free(vi);
        return SSMAX_OK;
    }
    const char *layers[1], *exts[1];
    uint32_t nl = 0, ne = 0;
    if (ctx) {
        if (has_layer(vi->gipa, "VK_LAYER_KHRONOS_validation"))
            layers[nl++] = "VK_LAYER_KHRONOS_validation";
        else
            ssmax_log(ctx, SSMAX_LOG_WARN, "vulkan: debug requested but VK_LAYER_KHRONOS_validation "
                                           "is not installed (Debian: vulkan-validationlayers)");
        if (has_inst_ext(vi->gipa, NULL, VK_EXT_DEBUG_UTILS_EXTENSION_NAME) ||
            (nl && has_inst_ext(vi->gipa, layers[0], VK_EXT_DEBUG_UTILS_EXTENSION_NAME)))
            exts[ne++] = VK_EXT_DEBUG_UTILS_EXTENSION_NAME;
    }
    VkApplicationInfo app = { .sType = VK_STRUCTURE_TYPE_APPLICATION_INFO,
                              .pApplicationName = "ssmax",
                              .pEngineName = "ssmax",
                              .apiVersion = VK_API_VERSION_1_1 };
    VkDebugUtilsMessengerCreateInfoEXT mci = {
        .sType = VK_STRUCTURE_TYPE_DEBUG_UTILS_MESSENGER_CREATE_INFO_EXT,
        .messageSeverity = VK_DEBUG_UTILS_MESSAGE_SEVERITY_ERROR_BIT_EXT |
                           VK_DEBUG_UTILS_MESSAGE_SEVERITY_WARNING_BIT_EXT,
        .messageType = VK_DEBUG_UTILS_MESSAGE_TYPE_GENERAL_BIT_EXT |
                       VK_DEBUG_UTILS_MESSAGE_TYPE_VALIDATION_BIT_EXT |
                       VK_DEBUG_UTILS_MESSAGE_TYPE_PERFORMANCE_BIT_EXT,
        .pfnUserCallback = messenger_cb,
        .pUserData = ctx,
    };
    VkInstanceCreateInfo ici = { .sType = VK_STRUCTURE_TYPE_INSTANCE_CREATE_INFO,
                                 .pNext = ne ? &mci : NULL,
                                 .pApplicationInfo = &app,
                                 .enabledLayerCount = nl,
                                 .ppEnabledLayerNames = layers,
                                 .enabledExtensionCount = ne,
                                 .ppEnabledExtensionNames = exts };
    VkResult r = create(&ici, NULL, &vi->inst);
    if (r != VK_SUCCESS) {
        snprintf(why, wn, "vulkan: vkCreateInstance failed (VkResult %d): no Vulkan devices",
                 (int)r);
        vi->inst = VK_NULL_HANDLE;
        inst_free(vi);
        return SSMAX_OK;
    }
#define LOAD_I(f)                                                                                  \
    if (!(vi->f = (PFN_##f)vi->gipa(vi->inst, #f))) {                                              \
        snprintf(why, wn, "vulkan: the loader lacks %s (Vulkan 1.1 needed)", #f);                  \
        inst_free(vi);                                                                             \
        return SSMAX_OK;                                                                           \
    }
    INSTANCE_FNS(LOAD_I)
    if (ne) {
        PFN_vkCreateDebugUtilsMessengerEXT cm =
            (PFN_vkCreateDebugUtilsMessengerEXT)vi->gipa(vi->inst, "vkCreateDebugUtilsMessengerEXT");
        vi->destroy_messenger = (PFN_vkDestroyDebugUtilsMessengerEXT)vi->gipa(
            vi->inst, "vkDestroyDebugUtilsMessengerEXT");
        if (cm && vi->destroy_messenger)
            cm(vi->inst, &mci, NULL, &vi->messenger);
    }
    uint32_t n = 0;
    vi->vkEnumeratePhysicalDevices(vi->inst, &n, NULL);
    VkPhysicalDevice *pds = calloc(n ? n : 1, sizeof(*pds));
    vi->phys = calloc(n ? n : 1, sizeof(*vi->phys));
    vi->infos = calloc(n ? n : 1, sizeof(*vi->infos));
    if (!pds || !vi->phys || !vi->infos) {
        free(pds);
        inst_free(vi);
        return SSMAX_ERR_OUT_OF_HOST_MEMORY;
    }
    if (n)
        vi->vkEnumeratePhysicalDevices(vi->inst, &n, pds);
    for (uint32_t i = 0; i < n; i++) {
        VkPhysicalDeviceProperties p;
        vi->vkGetPhysicalDeviceProperties(pds[i], &p);
        if (p.apiVersion < VK_API_VERSION_1_1) {
            ssmax_log(ctx, SSMAX_LOG_WARN, "vulkan: %s supports only Vulkan %u.%u; skipped",
                      p.deviceName, VK_API_VERSION_MAJOR(p.apiVersion),
                      VK_API_VERSION_MINOR(p.apiVersion));
            continue;
        }
        vi->phys[vi->ndev].pd = pds[i];
        fill_info(vi, vi->ndev);
        vi->ndev++;
    }
    free(pds);
    if (!vi->ndev)
        snprintf(why, wn, "vulkan: no device supports Vulkan 1.1");
    vi->owned = ctx != NULL;
    *out = vi;
    return SSMAX_OK;
}

/* Opens the loader once (under vk_lock). */
static void loader_open(void)
{
    if (vk_ld_tried)
        return;
    vk_ld_tried = 1;
    const char *libname = getenv("SSMAX_VULKAN_LOADER");
    void *lib = dlopen(libname ? libname : "libvulkan.so.1", RTLD_NOW | RTLD_LOCAL);
    if (!lib) {
        snprintf(vk_why, sizeof(vk_why), "vulkan: loader not found (%s): no Vulkan devices",
                 dlerror());
        return;
    }
    void *sym = dlsym(lib, "vkGetInstanceProcAddr");
    if (!sym) {
        snprintf(vk_why, sizeof(vk_why), "vulkan: the loader has no vkGetInstanceProcAddr");
        dlclose(lib);
        return;
    }
    vk_ld.lib = lib;
    memcpy(&vk_ld.gipa, &sym, sizeof(sym)); // POSIX: object pointer to function pointer
}

static int vk_init(struct ssmax_context *ctx, void **bpriv)
{
    *bpriv = NULL;
    struct vk_inst *vi = NULL;
    char why[256] = "";
    int r = SSMAX_OK;
    // Instances are created under the lock too: the loader and the drivers are entered by one
    // thread at a time while they set themselves up.
    pthread_mutex_lock(&vk_lock);
    loader_open();
    if (!vk_ld.lib)
        snprintf(why, sizeof(why), "%s", vk_why);
    else if (ctx->params.debug)
        r = inst_create(ctx, &vi, why, sizeof(why));
    else {
        if (!vk_sh_tried) {
            r = inst_create(NULL, &vk_shared, vk_why, sizeof(vk_why));
            vk_sh_tried = r == SSMAX_OK; // out of memory is not remembered
        }
        vi = vk_shared;
        snprintf(why, sizeof(why), "%s", vk_why);
    }
    pthread_mutex_unlock(&vk_lock);
    if (r < 0)
        return ssmax_set_error(ctx, r, "vulkan: out of host memory");
    if ((!vi || !vi->ndev) && why[0])
        ssmax_log(ctx, vk_ld.lib && !vi ? SSMAX_LOG_WARN : SSMAX_LOG_INFO, "%s", why);
    *bpriv = vi;
    return SSMAX_OK;
}

static void vk_uninit(struct ssmax_context *ctx, void *bpriv)
{
    (void)ctx;
    struct vk_inst *vi = bpriv;
    if (vi && vi->owned) // the shared instance is kept until exit (see above)
        inst_free(vi);
}

static int vk_enumerate(void *bpriv, struct ssmax_device_info *out, int cap)
{
    struct vk_inst *vi = bpriv;
    int n = vi->ndev < cap ? vi->ndev : cap;
    if (out)
        memcpy(out, vi->infos, sizeof(*out) * (size_t)(n > 0 ? n : 0));
    return out ? n : vi->ndev;
}

/* ---- memory ---- */

static int find_mem(const VkPhysicalDeviceMemoryProperties *mp, uint32_t bits,
                    VkMemoryPropertyFlags need, VkMemoryPropertyFlags want)
{
    for (int pass = 0; pass < 2; pass++)
        for (uint32_t i = 0; i < mp->memoryTypeCount; i++) {
            VkMemoryPropertyFlags f = mp->memoryTypes[i].propertyFlags;
            if (!(bits & (1u << i)) || (f & need) != need)
                continue;
            if (pass == 0 && (f & want) != want)
                continue;
            return (int)i;
        }
    return -1;
}

/* host: 1 = host-visible and mapped (staging, small uniforms, unified user buffers). */
static int buf_alloc(struct vk_dev *d, VkDeviceSize size, int host, struct vk_buf *out)
{
    memset(out, 0, sizeof(*out));
    VkBufferCreateInfo bci = { .sType = VK_STRUCTURE_TYPE_BUFFER_CREATE_INFO,
                               .size = size,
                               .usage = VK_BUFFER_USAGE_STORAGE_BUFFER_BIT |
                                        VK_BUFFER_USAGE_TRANSFER_SRC_BIT |
                                        VK_BUFFER_USAGE_TRANSFER_DST_BIT,
                               .sharingMode = VK_SHARING_MODE_EXCLUSIVE };
    VkResult r = d->vkCreateBuffer(d->dev, &bci, NULL, &out->buf);
    if (r != VK_SUCCESS)
        return vk_err(d->base.ctx, r, "vkCreateBuffer");
    VkMemoryRequirements req;
    d->vkGetBufferMemoryRequirements(d->dev, out->buf, &req);
    int type = host ? find_mem(&d->mem, req.memoryTypeBits,
                               VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT |
                                   VK_MEMORY_PROPERTY_HOST_COHERENT_BIT,
                               host == 2 ? VK_MEMORY_PROPERTY_HOST_CACHED_BIT
                                         : VK_MEMORY_PROPERTY_DEVICE_LOCAL_BIT)
                    : find_mem(&d->mem, req.memoryTypeBits, VK_MEMORY_PROPERTY_DEVICE_LOCAL_BIT, 0);
    if (type < 0)
        type = find_mem(&d->mem, req.memoryTypeBits, 0, 0);
    if (type < 0) {
        d->vkDestroyBuffer(d->dev, out->buf, NULL);
        out->buf = VK_NULL_HANDLE;
        return ssmax_set_error(d->base.ctx, SSMAX_ERR_BACKEND, "vulkan: no memory type for a buffer");
    }
    VkMemoryAllocateInfo mai = { .sType = VK_STRUCTURE_TYPE_MEMORY_ALLOCATE_INFO,
                                 .allocationSize = req.size,
                                 .memoryTypeIndex = (uint32_t)type };
    r = ssmax_fault_alloc(d->base.ctx) ? VK_ERROR_OUT_OF_DEVICE_MEMORY
                                       : d->vkAllocateMemory(d->dev, &mai, NULL, &out->mem);
    if (r == VK_SUCCESS)
        r = d->vkBindBufferMemory(d->dev, out->buf, out->mem, 0);
    if (r == VK_SUCCESS && host)
        r = d->vkMapMemory(d->dev, out->mem, 0, VK_WHOLE_SIZE, 0, &out->map);
    if (r != VK_SUCCESS) {
        int code = vk_err(d->base.ctx, r, "vkAllocateMemory");
        if (out->mem)
            d->vkFreeMemory(d->dev, out->mem, NULL);
        d->vkDestroyBuffer(d->dev, out->buf, NULL);
        memset(out, 0, sizeof(*out));
        return ssmax_set_error(d->base.ctx, code, "size: %llu bytes could not be allocated on the "
                               "device (VkResult %d)", (unsigned long long)size, (int)r);
    }
    out->size = size;
    return SSMAX_OK;
}

static void buf_free(struct vk_dev *d, struct vk_buf *b)
{
    if (b->buf)
        d->vkDestroyBuffer(d->dev, b->buf, NULL);
    if (b->mem)
        d->vkFreeMemory(d->dev, b->mem, NULL);
    memset(b, 0, sizeof(*b));
}

/* Grows an internal buffer to at least size bytes. */
static int buf_ensure(struct vk_dev *d, struct vk_buf *b, VkDeviceSize size, int host)
{
    if (b->buf && b->size >= size)
        return SSMAX_OK;
    buf_free(d, b);
    VkDeviceSize s = size < 4096 ? 4096 : size;
    return buf_alloc(d, s, host, b);
}

/* ---- submission ---- */

static int begin_cmd(struct vk_dev *d)
{
    VkResult r = d->vkResetCommandBuffer(d->cmd, 0);
    VkCommandBufferBeginInfo bi = { .sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO,
                                    .flags = VK_COMMAND_BUFFER_USAGE_ONE_TIME_SUBMIT_BIT };
    if (r == VK_SUCCESS)
        r = d->vkBeginCommandBuffer(d->cmd, &bi);
    return r == VK_SUCCESS ? SSMAX_OK : vk_err(d->base.ctx, r, "vkBeginCommandBuffer");
}

static int submit_wait(struct vk_dev *d)
{
    VkResult r = d->vkEndCommandBuffer(d->cmd);
    if (r != VK_SUCCESS)
        return vk_err(d->base.ctx, r, "vkEndCommandBuffer");
    VkSubmitInfo si = { .sType = VK_STRUCTURE_TYPE_SUBMIT_INFO,
                        .commandBufferCount = 1,
                        .pCommandBuffers = &d->cmd };
    r = d->vkResetFences(d->dev, 1, &d->fence);
    if (r == VK_SUCCESS && ssmax_fault_lost(d->base.ctx))
        r = VK_ERROR_DEVICE_LOST;
    if (r == VK_SUCCESS)
        r = d->vkQueueSubmit(d->queue, 1, &si, d->fence);
    if (r != VK_SUCCESS)
        return vk_err(d->base.ctx, r, "vkQueueSubmit");
    r = d->vkWaitForFences(d->dev, 1, &d->fence, VK_TRUE, 600ull * 1000000000ull);
    if (r == VK_TIMEOUT)
        return ssmax_set_error(d->base.ctx, SSMAX_ERR_DEVICE_LOST,
                               "vulkan: the device did not finish within 600 s; treating it as lost");
    return r == VK_SUCCESS ? SSMAX_OK : vk_err(d->base.ctx, r, "vkWaitForFences");
}

static void barrier(struct vk_dev *d, VkPipelineStageFlags src, VkAccessFlags sa,
                    VkPipelineStageFlags dst, VkAccessFlags da)
{
    VkMemoryBarrier mb = { .sType = VK_STRUCTURE_TYPE_MEMORY_BARRIER,
                           .srcAccessMask = sa,
                           .dstAccessMask = da };
    d->vkCmdPipelineBarrier(d->cmd, src, dst, 0, 1, &mb, 0, NULL, 0, NULL);
}

/* ---- device ---- */

static void vk_close(struct ssmax_dev *base);

static int vk_open(struct ssmax_context *ctx, void *bpriv, int idx, struct ssmax_dev **out)
{
    struct vk_inst *vi = bpriv;
    if (!vi || idx < 0 || idx >= vi->ndev)
        return ssmax_set_error(ctx, SSMAX_ERR_NO_DEVICE, "device: vulkan:%d does not exist", idx);
    struct vk_dev *d = ssmax_calloc(ctx, 1, sizeof(*d));
    if (!d)
        return ssmax_set_error(ctx, SSMAX_ERR_OUT_OF_HOST_MEMORY, "vulkan: out of host memory");
    d->base.ctx = ctx;
    d->vi = vi;
    d->ph = &vi->phys[idx];
    VkPhysicalDevice pd = d->ph->pd;
    uint32_t nq = 0;
    vi->vkGetPhysicalDeviceQueueFamilyProperties(pd, &nq, NULL);
    VkQueueFamilyProperties qf[16];
    if (nq > 16)
        nq = 16;
    vi->vkGetPhysicalDeviceQueueFamilyProperties(pd, &nq, qf);
    int fam = -1;
    for (uint32_t i = 0; i < nq && fam < 0; i++) // a compute queue, preferably with timestamps
        if ((qf[i].queueFlags & VK_QUEUE_COMPUTE_BIT) && qf[i].timestampValidBits)
            fam = (int)i;
    for (uint32_t i = 0; i < nq && fam < 0; i++)
        if (qf[i].queueFlags & VK_QUEUE_COMPUTE_BIT)
            fam = (int)i;
    if (fam < 0) {
        ssmax_free(ctx, d);
        return ssmax_set_error(ctx, SSMAX_ERR_UNSUPPORTED, "vulkan: %s has no compute queue",
                               d->ph->props.deviceName);
    }
    d->qfam = (uint32_t)fam;
    uint32_t tsbits = qf[fam].timestampValidBits;
    d->ts_mask = tsbits >= 64 ? ~0ull : ((1ull << tsbits) - 1);
    float prio = 1.0f;
    VkDeviceQueueCreateInfo qci = { .sType = VK_STRUCTURE_TYPE_DEVICE_QUEUE_CREATE_INFO,
                                    .queueFamilyIndex = d->qfam,
                                    .queueCount = 1,
                                    .pQueuePriorities = &prio };
    VkDeviceCreateInfo dci = { .sType = VK_STRUCTURE_TYPE_DEVICE_CREATE_INFO,
                               .queueCreateInfoCount = 1,
                               .pQueueCreateInfos = &qci };
    VkResult r = vi->vkCreateDevice(pd, &dci, NULL, &d->dev);
    if (r != VK_SUCCESS) {
        ssmax_free(ctx, d);
        return vk_err(ctx, r, "vkCreateDevice");
    }
#define LOAD_D(f)                                                                                  \
    if (!(d->f = (PFN_##f)vi->vkGetDeviceProcAddr(d->dev, #f))) {                                  \
        vk_close(&d->base);                                                                        \
        return ssmax_set_error(ctx, SSMAX_ERR_BACKEND, "vulkan: the driver lacks %s", #f);         \
    }
    DEVICE_FNS(LOAD_D)
    d->vkGetDeviceQueue(d->dev, d->qfam, 0, &d->queue);
    vi->vkGetPhysicalDeviceMemoryProperties(pd, &d->mem);
    // Unified memory: device-local and host-visible; CPU drivers and integrated GPUs map directly.
    VkPhysicalDeviceType t = d->ph->props.deviceType;
    int uma_type = 0;
    for (uint32_t i = 0; i < d->mem.memoryTypeCount; i++) {
        VkMemoryPropertyFlags f = d->mem.memoryTypes[i].propertyFlags;
        uma_type |= (f & VK_MEMORY_PROPERTY_DEVICE_LOCAL_BIT) &&
                    (f & VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT) &&
                    (f & VK_MEMORY_PROPERTY_HOST_COHERENT_BIT);
    }
    d->unified = uma_type && (t == VK_PHYSICAL_DEVICE_TYPE_CPU ||
                              t == VK_PHYSICAL_DEVICE_TYPE_INTEGRATED_GPU);
    if (ssmax_env_int("SSMAX_VK_STAGING", 0))
        d->unified = 0;

    VkCommandPoolCreateInfo cpi = { .sType = VK_STRUCTURE_TYPE_COMMAND_POOL_CREATE_INFO,
                                    .flags = VK_COMMAND_POOL_CREATE_RESET_COMMAND_BUFFER_BIT,
                                    .queueFamilyIndex = d->qfam };
    VkFenceCreateInfo fci = { .sType = VK_STRUCTURE_TYPE_FENCE_CREATE_INFO };
    VkDescriptorSetLayoutBinding binds[NUM_BINDINGS];
    for (uint32_t i = 0; i < NUM_BINDINGS; i++)
        binds[i] = (VkDescriptorSetLayoutBinding){ .binding = i,
                                                   .descriptorType =
                                                       VK_DESCRIPTOR_TYPE_STORAGE_BUFFER,
                                                   .descriptorCount = 1,
                                                   .stageFlags = VK_SHADER_STAGE_COMPUTE_BIT };
    VkDescriptorSetLayoutCreateInfo dslci = {
        .sType = VK_STRUCTURE_TYPE_DESCRIPTOR_SET_LAYOUT_CREATE_INFO,
        .bindingCount = NUM_BINDINGS,
        .pBindings = binds
    };
    VkPushConstantRange pcr = { VK_SHADER_STAGE_COMPUTE_BIT, 0, PUSH_WORDS * 4 };
    VkDescriptorPoolSize ps = { VK_DESCRIPTOR_TYPE_STORAGE_BUFFER, NUM_BINDINGS * 4 };
    VkDescriptorPoolCreateInfo dpci = { .sType = VK_STRUCTURE_TYPE_DESCRIPTOR_POOL_CREATE_INFO,
                                        .maxSets = 4,
                                        .poolSizeCount = 1,
                                        .pPoolSizes = &ps };
    VkCommandBufferAllocateInfo cai = { .sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_ALLOCATE_INFO,
                                        .level = VK_COMMAND_BUFFER_LEVEL_PRIMARY,
                                        .commandBufferCount = 1 };
    VkQueryPoolCreateInfo qpci = { .sType = VK_STRUCTURE_TYPE_QUERY_POOL_CREATE_INFO,
                                   .queryType = VK_QUERY_TYPE_TIMESTAMP,
                                   .queryCount = 2 };
    if ((r = d->vkCreateCommandPool(d->dev, &cpi, NULL, &d->pool)) != VK_SUCCESS ||
        (cai.commandPool = d->pool,
         (r = d->vkAllocateCommandBuffers(d->dev, &cai, &d->cmd)) != VK_SUCCESS) ||
        (r = d->vkCreateFence(d->dev, &fci, NULL, &d->fence)) != VK_SUCCESS ||
        (r = d->vkCreateDescriptorSetLayout(d->dev, &dslci, NULL, &d->dsl)) != VK_SUCCESS ||
        (r = d->vkCreateDescriptorPool(d->dev, &dpci, NULL, &d->dpool)) != VK_SUCCESS ||
        (tsbits && (r = d->vkCreateQueryPool(d->dev, &qpci, NULL, &d->qpool)) != VK_SUCCESS)) {
        vk_close(&d->base);
        return vk_err(ctx, r, "device setup");
    }
    VkPipelineLayoutCreateInfo plci = { .sType = VK_STRUCTURE_TYPE_PIPELINE_LAYOUT_CREATE_INFO,
                                        .setLayoutCount = 1,
                                        .pSetLayouts = &d->dsl,
                                        .pushConstantRangeCount = 1,
                                        .pPushConstantRanges = &pcr };
    if ((r = d->vkCreatePipelineLayout(d->dev, &plci, NULL, &d->layout)) != VK_SUCCESS) {
        vk_close(&d->base);
        return vk_err(ctx, r, "vkCreatePipelineLayout");
    }
    if (ctx->params.debug && ssmax_env_int("SSMAX_VK_PROVOKE_VALIDATION", 0)) {
        // Test hook: one invalid call (a zero-sized buffer) to prove the validation gate counts.
        VkBufferCreateInfo bad = { .sType = VK_STRUCTURE_TYPE_BUFFER_CREATE_INFO,
                                   .size = 0,
                                   .usage = VK_BUFFER_USAGE_STORAGE_BUFFER_BIT };
        VkBuffer vb = VK_NULL_HANDLE;
        if (d->vkCreateBuffer(d->dev, &bad, NULL, &vb) == VK_SUCCESS && vb)
            d->vkDestroyBuffer(d->dev, vb, NULL);
    }
    int e = buf_ensure(d, &d->dummy, 256, 0);
    if (e < 0) {
        vk_close(&d->base);
        return e;
    }
    *out = &d->base;
    return SSMAX_OK;
}

static void vk_close(struct ssmax_dev *base)
{
    struct vk_dev *d = (struct vk_dev *)base;
    struct ssmax_context *ctx = base->ctx;
    if (d->dev) {
        if (d->vkDeviceWaitIdle)
            d->vkDeviceWaitIdle(d->dev);
        if (d->vkDestroyBuffer) {
            buf_free(d, &d->staging);
            buf_free(d, &d->coef);
            buf_free(d, &d->dummy);
            buf_free(d, &d->scr0);
            buf_free(d, &d->scr1);
        }
        for (int i = 0; i < d->npipes; i++)
            d->vkDestroyPipeline(d->dev, d->pipes[i].pipe, NULL);
        if (d->layout)
            d->vkDestroyPipelineLayout(d->dev, d->layout, NULL);
        if (d->dpool)
            d->vkDestroyDescriptorPool(d->dev, d->dpool, NULL);
        if (d->dsl)
            d->vkDestroyDescriptorSetLayout(d->dev, d->dsl, NULL);
        if (d->qpool)
            d->vkDestroyQueryPool(d->dev, d->qpool, NULL);
        if (d->fence)
            d->vkDestroyFence(d->dev, d->fence, NULL);
        if (d->pool)
            d->vkDestroyCommandPool(d->dev, d->pool, NULL);
        PFN_vkDestroyDevice dd =
            d->vkDestroyDevice ? d->vkDestroyDevice
                               : (PFN_vkDestroyDevice)d->vi->vkGetDeviceProcAddr(d->dev,
                                                                                 "vkDestroyDevice");
        if (dd)
            dd(d->dev, NULL);
    }
    ssmax_free(ctx, d->pipes);
    ssmax_free(ctx, d);
}

/* ---- user buffers ---- */

static int vk_buf_create(struct ssmax_dev *base, size_t size, void **out)
{
    struct vk_dev *d = (struct vk_dev *)base;
    struct vk_buf *b = ssmax_calloc(base->ctx, 1, sizeof(*b));
    if (!b)
        return ssmax_set_error(base->ctx, SSMAX_ERR_OUT_OF_HOST_MEMORY, "vulkan: out of host memory");
    int r = buf_alloc(d, size, d->unified, b);
    if (r < 0) {
        ssmax_free(base->ctx, b);
        return r;
    }
    *out = b;
    return SSMAX_OK;
}

static void vk_buf_destroy(struct ssmax_dev *base, void *p)
{
    struct vk_dev *d = (struct vk_dev *)base;
    buf_free(d, p);
    ssmax_free(base->ctx, p);
}

#define STAGING_CHUNK (64ull << 20)

static int staged_copy(struct vk_dev *d, struct vk_buf *b, size_t off, void *host, size_t n,
                       int to_device)
{
    int r = buf_ensure(d, &d->staging, n < STAGING_CHUNK ? n : STAGING_CHUNK, 2);
    if (r < 0)
        return r;
    for (size_t done = 0; done < n;) {
        size_t c = n - done < d->staging.size ? n - done : (size_t)d->staging.size;
        if (to_device)
            memcpy(d->staging.map, (char *)host + done, c);
        if ((r = begin_cmd(d)) < 0)
            return r;
        VkBufferCopy reg = { to_device ? 0 : off + done, to_device ? off + done : 0, c };
        d->vkCmdCopyBuffer(d->cmd, to_device ? d->staging.buf : b->buf,
                           to_device ? b->buf : d->staging.buf, 1, &reg);
        if ((r = submit_wait(d)) < 0)
            return r;
        if (!to_device)
            memcpy((char *)host + done, d->staging.map, c);
        done += c;
    }
    return SSMAX_OK;
}

static int vk_buf_write(struct ssmax_dev *base, void *p, size_t off, const void *src, size_t n)
{
    struct vk_buf *b = p;
    if (b->map) {
        memcpy((char *)b->map + off, src, n);
        return SSMAX_OK;
    }
    return staged_copy((struct vk_dev *)base, b, off, (void *)src, n, 1);
}

static int vk_buf_read(struct ssmax_dev *base, void *p, size_t off, void *dst, size_t n)
{
    struct vk_buf *b = p;
    if (b->map) {
        memcpy(dst, (char *)b->map + off, n);
        return SSMAX_OK;
    }
    return staged_copy((struct vk_dev *)base, b, off, dst, n, 0);
}

/* ---- planning ---- */

struct vk_tiles {
    uint32_t br, bc, tpr;
    uint32_t rows; // 1: flash_rows.comp, BR / subgroup size query rows per lane, BC keys a step
};

static uint32_t shared_bytes(const struct vk_tiles *t, uint32_t D)
{
    if (t->rows)
        return 0;
    return 4 * (t->br * D + t->bc * D + t->br * t->bc) + 16 * t->br;
}

/* SSMAX_VK_SUBGROUPS=0: no kernel that uses subgroup operations. */
static int no_subgroups(void)
{
    const char *e = getenv("SSMAX_VK_SUBGROUPS");
    return e && !strcmp(e, "0");
}

/* The rows kernel (flash_rows.comp) needs a subgroup shuffle in compute shaders, and the head dim
 * must split evenly over the subgroup's lanes. */
static int rows_ok(const struct vk_dev *d, uint32_t D)
{
    uint32_t sg = d->ph->subgroup_size;
    return d->ph->shuffle && sg >= 4 && sg <= 64 && D % sg == 0 && !no_subgroups();
}

/* Why the device cannot run tiles t at head dim D (into why), or 0 when it can. */
static int tiles_refused(const struct vk_dev *d, const struct vk_tiles *t, uint32_t D, char *why,
                         size_t n)
{
    const VkPhysicalDeviceLimits *lim = &d->ph->props.limits;
    if (shared_bytes(t, D) <= lim->maxComputeSharedMemorySize &&
        t->br * t->tpr <= lim->maxComputeWorkGroupInvocations &&
        t->br * t->tpr <= lim->maxComputeWorkGroupSize[0])
        return 0;
    snprintf(why, n, "tiles %u,%u,%u need %u bytes of shared memory and %u invocations; the device "
             "has %u and %u", t->br, t->bc, t->tpr, shared_bytes(t, D), t->br * t->tpr,
             lim->maxComputeSharedMemorySize, lim->maxComputeWorkGroupInvocations);
    return 1;
}

/* The tuned entry for D (ssmax bench --tune) in *t: 1 when there is one the device runs, 0 when
 * none applies. An entry the device refuses (a file from an older version or edited by hand) is
 * dropped with a warning, so every later call takes the table instead of failing; while
 * ssmax_tune_store tries the entry (tune_strict) it is the error. */
static int tuned_tiles(struct vk_dev *d, uint32_t D, int fused, struct vk_tiles *t)
{
    uint32_t tu[3], sg = d->ph->subgroup_size;
    if (!ssmax_tune_get(&d->base, D, tu) || (tu[2] == 0 && !fused))
        return 0; // tpr 0 names the fused rows kernel; the unfused kernels take the table
    char why[320];
    if (tu[2] == 0 && !rows_ok(d, D)) {
        snprintf(why, sizeof(why), "tiles rows,%u,%u: the rows kernel needs subgroup shuffles in "
                 "compute shaders and head_dim %u a multiple of the subgroup size %u", tu[1],
                 tu[0], D, sg);
    } else {
        *t = tu[2] == 0 ? (struct vk_tiles){ sg * tu[0], tu[1], 4, 1 }
                        : (struct vk_tiles){ tu[0], tu[1], tu[2], 0 };
        if (!tiles_refused(d, t, D, why, sizeof(why)))
            return 1;
    }
    return ssmax_tune_refused(&d->base, D, why);
}

/* Tile table by device class and vendor, overridable with SSMAX_VK_TILES="BR,BC,TPR" (the shared-
 * memory tiles kernel) or "rows,BC[,RL]" (RL rows per subgroup lane, BC keys per step). fused = 0
 * asks for the unfused kernels' tiles, which never take the rows kernel. rows: packed query rows
 * per KV head (decode has few). */
static int choose_tiles(struct vk_dev *d, uint32_t D, uint64_t rows, int fused, struct vk_tiles *t)
{
    const VkPhysicalDeviceLimits *lim = &d->ph->props.limits;
    const char *env = d->base.tune_strict ? NULL : getenv("SSMAX_VK_TILES");
    const uint32_t sg = d->ph->subgroup_size;
    if (!fused && env && !strncmp(env, "rows", 4))
        env = NULL; // the override names the fused kernel; the unfused one takes the table
    int tuned = 0;
    unsigned rbc, rrl = 1;
    char rtail;
    if (env && !strncmp(env, "rows", 4)) {
        int nf = sscanf(env, "rows,%u,%u%c", &rbc, &rrl, &rtail);
        if ((nf != 1 && nf != 2) || rbc < 1 || rbc > 16 || rrl < 1 || rrl > 4)
            return ssmax_set_error(d->base.ctx, SSMAX_ERR_INVALID_ARG,
                                   "SSMAX_VK_TILES: '%s' must be rows,BC[,RL] with BC in [1, 16] "
                                   "and RL in [1, 4]", env);
        if (!rows_ok(d, D))
            return ssmax_set_error(d->base.ctx, SSMAX_ERR_UNSUPPORTED,
                                   "SSMAX_VK_TILES: the rows kernel needs subgroup shuffles in "
                                   "compute shaders and head_dim %u a multiple of the subgroup "
                                   "size %u", D, sg);
        *t = (struct vk_tiles){ sg * rrl, rbc, 4, 1 };
    } else if (env && *env) {
        uint32_t e[3];
        if (ssmax_parse_tiles(env, D, e) < 0)
            return ssmax_set_error(d->base.ctx, SSMAX_ERR_INVALID_ARG,
                                   "SSMAX_VK_TILES: '%s' must be BR,BC,TPR with TPR in {1,2,4}, "
                                   "D %% (2*TPR) == 0, BR*TPR <= 1024, BR even and BC a multiple of 8, "
                                   "or rows,BC[,RL]", env);
        *t = (struct vk_tiles){ e[0], e[1], e[2], 0 };
    } else if ((tuned = tuned_tiles(d, D, fused, t)) != 0) {
        if (tuned < 0) // ssmax bench --tune; tpr 0 stands for the rows kernel, br rows per lane
            return tuned;
    } else if (fused && d->ph->props.deviceType == VK_PHYSICAL_DEVICE_TYPE_CPU && rows_ok(d, D)) {
        // CPU drivers: RL query rows per SIMD lane, everything in registers (flash_rows.comp).
        // On lavapipe every shared- or storage-memory read inside a loop is a per-lane loop with
        // a branch per word, which bounds the shared-memory tiles kernel. B1 H8 L1024, ms, with
        // K/V read 4 words at a time, and the first pipeline's compile time (uncached):
        //   D64:  tiles 32,48 273; rows BC,RL 4,2: 36; 2,3: 29 (1.5 s); 2,4: 30 (2.4 s)
        //   D128: tiles 16,32 683; rows 1,2: 81; 2,2: 90; 1,3: 66 (4.3 s); 1,4: 85 (8.2 s)
        //   D256: tiles 8,16 2384; rows 1,1: 259 (4.3 s); 1,2: 381 (10 s)
        *t = D <= 64 ? (struct vk_tiles){ sg * 3, 2, 4, 1 }
             : D <= 128 ? (struct vk_tiles){ sg * 3, 1, 4, 1 }
                        : (struct vk_tiles){ sg, 1, 4, 1 };
    } else {
        // Fused: BR rows x BC keys over 16 invocations, each holding (BR/2) x (BC/8) scores and
        // (BR/2) x (D/8) outputs in registers. Sized so shared memory stays under 32 KiB.
        // (tpr is the unfused P V kernel's invocations per row.)
        // The GPU rows are starting points until measured on each vendor's hardware; `ssmax
        // bench --tune` stores a measured choice per device. CPU drivers without subgroup
        // shuffles take large register blocks (lavapipe, B1 H8 L1024 D64: 16,32 419 ms; 32,32
        // 292; 32,48 277).
        const uint32_t vendor = d->ph->props.vendorID;
        const int cpu = d->ph->props.deviceType == VK_PHYSICAL_DEVICE_TYPE_CPU;
        static const struct {
            uint32_t vendor; // 0: any vendor
            int cpu;         // -1: any device type
            uint32_t dmax;
            struct vk_tiles t;
        } table[] = {
            // CPU drivers without subgroup shuffles: large register blocks
            { 0, 1, 64, { 32, 48, 4, 0 } },     { 0, 1, 128, { 16, 32, 4, 0 } },
            { 0, 1, 256, { 8, 16, 4, 0 } },
            // mobile GPUs (ARM Mali, Qualcomm Adreno, Imagination): few registers per invocation
            { 0x13b5, -1, 64, { 8, 32, 4, 0 } }, { 0x13b5, -1, 256, { 4, 16, 4, 0 } },
            { 0x5143, -1, 64, { 8, 32, 4, 0 } }, { 0x5143, -1, 256, { 4, 16, 4, 0 } },
            { 0x1010, -1, 64, { 8, 32, 4, 0 } }, { 0x1010, -1, 256, { 4, 16, 4, 0 } },
            // desktop GPUs (AMD, NVIDIA, Intel and the rest)
            { 0, 0, 64, { 16, 32, 4, 0 } },     { 0, 0, 128, { 8, 32, 4, 0 } },
            { 0, 0, 256, { 4, 16, 4, 0 } },
        };
        *t = (struct vk_tiles){ 4, 16, 4, 0 };
        for (size_t i = 0; i < SSMAX_ARRAY_LEN(table); i++)
            if ((!table[i].vendor || table[i].vendor == vendor) &&
                (table[i].cpu < 0 || table[i].cpu == cpu) && D <= table[i].dmax) {
                *t = table[i].t;
                break;
            }
        // Decode: fewer packed rows per KV head than the block holds; don't compute empty rows.
        if (rows < t->br) {
            t->br = rows < 2 ? 2 : (uint32_t)(rows + 1) / 2 * 2;
            if (D <= 64 && t->br <= 8)
                t->bc = 64;
        }
        while (shared_bytes(t, D) > lim->maxComputeSharedMemorySize && t->bc > 8)
            t->bc /= 2;
        while (shared_bytes(t, D) > lim->maxComputeSharedMemorySize && t->br > 1)
            t->br /= 2;
    }
    // Decode on the rows kernel (table or tuned): no more rows per lane than there are rows.
    if (t->rows && !(env && *env))
        while (t->br > sg && (t->br - sg) >= rows)
            t->br -= sg;
    char why[320];
    if (tiles_refused(d, t, D, why, sizeof(why)))
        return ssmax_set_error(d->base.ctx, SSMAX_ERR_LIMIT_EXCEEDED, "head_dim %u: %s", D, why);
    return SSMAX_OK;
}

struct vk_bind {
    VkDeviceSize base, range;
    uint32_t elem_off;
};

static struct vk_bind bind_of(struct vk_dev *d, size_t off, uint64_t bytes, uint32_t esz)
{
    VkDeviceSize a = d->ph->props.limits.minStorageBufferOffsetAlignment;
    if (!a)
        a = 1;
    struct vk_bind b;
    b.base = off - off % a;
    b.elem_off = (uint32_t)((off - b.base) / esz);
    b.range = bytes + (off - b.base);
    return b;
}

/* Loop iterations one invocation spends per key tile (fused, pv) and once (Q staging), matching
 * the loop structure of flash_attn.comp and pv.comp. */
#define LOOP_BUDGET 60000u /* llvmpipe stops loops after 65535 iterations; keep a margin */
#define CDIV(a, b) (((a) + (b)-1) / (b))

static uint32_t max_tiles_per_wg(const struct vk_dev *d, const struct vk_tiles *t, uint32_t D)
{
    if (!d->ph->loop_limited)
        return UINT32_MAX;
    if (t->rows) // one loop iteration per step of BC keys; everything else is unrolled
        return LOOP_BUDGET - 8;
    // flash_attn.comp per tile: K and V staging (4 words an iteration), D/4 for the scores, BC/4
    // each for the row max, the row sum and P V, plus the tile loop itself.
    // flash_attn.comp per tile (16 invocations): K and V staging BC*D/64 each, scores D, row max
    // BC/4 (for BR/16 rows), P V BC, plus the tile loop; Q staging and the output once.
    uint32_t per = 2 * CDIV(t->bc * D, 64) + D + CDIV(t->br, 16) * CDIV(t->bc, 4) + t->bc + 2;
    uint32_t once = CDIV(t->br * D, 16) + CDIV(t->br * D, 32) + 8;
    return (LOOP_BUDGET - once) / per;
}

/* The path and split count the device will actually run. On llvmpipe a workgroup may walk only so
 * many key tiles; AUTO plans split the keys further, an explicit choice that cannot run is an
 * error that says so. */
static int resolve_path(struct vk_dev *d, const struct attn_plan *pl, const struct vk_tiles *t,
                        enum ssmax_path *path, uint32_t *splits)
{
    const struct ssmax_attn_params *p = &pl->p;
    uint64_t cap_keys = (uint64_t)max_tiles_per_wg(d, t, p->head_dim) * t->bc;
    *path = pl->path;
    *splits = pl->splits;
    if (*path == SSMAX_PATH_UNFUSED) {
        uint32_t d4 = p->head_dim / 4, wg = t->br * t->tpr;
        uint64_t per = CDIV(t->br * t->bc, wg) + CDIV(t->bc * d4, wg) + CDIV(t->bc, 4) + 1;
        if (d->ph->loop_limited && CDIV((uint64_t)p->kv_len, t->bc) * per + 3 * CDIV(p->kv_len, 256) >
                                       LOOP_BUDGET)
            return ssmax_set_error(d->base.ctx, SSMAX_ERR_LIMIT_EXCEEDED,
                                   "kv_len: %u keys exceed what one llvmpipe invocation can loop "
                                   "over on the unfused path (65535 loop iterations in all); use "
                                   "the fused or split-kv path", p->kv_len);
        return SSMAX_OK;
    }
    uint32_t need = (uint32_t)CDIV((uint64_t)p->kv_len, cap_keys);
    uint32_t have = *path == SSMAX_PATH_SPLIT_KV ? *splits : 1;
    if (need <= have)
        return SSMAX_OK;
    if (p->path == SSMAX_PATH_AUTO && !p->kv_splits) {
        *path = SSMAX_PATH_SPLIT_KV;
        *splits = need;
        ssmax_log(d->base.ctx, SSMAX_LOG_INFO, "vulkan: %u keys per workgroup exceed llvmpipe's "
                  "loop limit (%llu); splitting the keys %u ways", p->kv_len,
                  (unsigned long long)cap_keys, need);
        return SSMAX_OK;
    }
    return ssmax_set_error(d->base.ctx, SSMAX_ERR_UNSUPPORTED,
                           "path: %s over %u keys needs at least %u key splits on llvmpipe (one "
                           "invocation may loop 65535 times in all, about %llu keys here); use "
                           "path auto or split-kv with kv_splits >= %u",
                           p->path == SSMAX_PATH_FUSED ? "fused" : "split-kv", p->kv_len, need,
                           (unsigned long long)cap_keys, need);
}

static int vk_attn_supported(struct ssmax_dev *base, const struct attn_plan *pl)
{
    struct vk_dev *d = (struct vk_dev *)base;
    const struct ssmax_attn_params *p = &pl->p;
    const VkPhysicalDeviceLimits *lim = &d->ph->props.limits;
    if (p->head_dim % 8 || p->head_dim < 8 || p->head_dim > SSMAX_MAX_HEAD_DIM)
        return ssmax_set_error(base->ctx, SSMAX_ERR_UNSUPPORTED,
                               "head_dim: %u is not a multiple of 8 in [8, %d] (the Vulkan "
                               "kernels' range; the cpu device takes any)",
                               p->head_dim, SSMAX_MAX_HEAD_DIM);
    struct vk_tiles t;
    int r = choose_tiles(d, p->head_dim, (uint64_t)pl->group * p->q_len,
                         pl->path != SSMAX_PATH_UNFUSED, &t);
    if (r < 0)
        return r;
    // A binding starts at the offset rounded down to minStorageBufferOffsetAlignment (see bind_of)
    // and must cover the tensor: at most maxStorageBufferRange bytes in all. Planned without
    // buffers, offsets are 0 and the tensor alone is compared.
    uint64_t maxr = lim->maxStorageBufferRange, align = lim->minStorageBufferOffsetAlignment;
    if (!align)
        align = 1;
    struct plan_tensor ts[PLAN_TENSORS];
    ssmax_plan_tensors(pl, ts);
    for (size_t i = 0; i < PLAN_TENSORS; i++) {
        if (!ts[i].esz)
            continue; // probs: the scores scratch is copied into it, never bound
        if (ts[i].bytes > maxr)
            return ssmax_set_error(base->ctx, SSMAX_ERR_LIMIT_EXCEEDED,
                                   "%s: %llu bytes exceed the device's storage buffer range %llu "
                                   "(maxStorageBufferRange); split the batch or the heads",
                                   ts[i].name, (unsigned long long)ts[i].bytes,
                                   (unsigned long long)maxr);
        if (ts[i].bytes + ts[i].off % align > maxr)
            return ssmax_set_error(base->ctx, SSMAX_ERR_LIMIT_EXCEEDED,
                                   "%s_off: %llu is %llu bytes past a multiple of "
                                   "minStorageBufferOffsetAlignment %llu, so the binding needs "
                                   "%llu bytes, over maxStorageBufferRange %llu; align the offset",
                                   ts[i].name, (unsigned long long)ts[i].off,
                                   (unsigned long long)(ts[i].off % align),
                                   (unsigned long long)align,
                                   (unsigned long long)(ts[i].bytes + ts[i].off % align),
                                   (unsigned long long)maxr);
    }
    uint64_t rows = (uint64_t)p->batch * p->q_heads * p->q_len;
    enum ssmax_path path;
    uint32_t splits;
    if ((r = resolve_path(d, pl, &t, &path, &splits)) < 0)
        return r;
    if (path == SSMAX_PATH_SPLIT_KV && (uint64_t)splits * rows * p->head_dim * 4 > maxr)
        return ssmax_set_error(base->ctx, SSMAX_ERR_LIMIT_EXCEEDED,
                               "kv_splits: %u splits of %llu rows x %u need %llu bytes of scratch, "
                               "over the storage buffer range %llu", splits,
                               (unsigned long long)rows, p->head_dim,
                               (unsigned long long)splits * rows * p->head_dim * 4,
                               (unsigned long long)maxr);
    if (pl->path == SSMAX_PATH_UNFUSED && (uint64_t)p->kv_len * 4 * 16 > maxr)
        return ssmax_set_error(base->ctx, SSMAX_ERR_LIMIT_EXCEEDED,
                               "kv_len: %u keys are too many for the unfused path's scores on this "
                               "device (storage buffer range %llu)", p->kv_len,
                               (unsigned long long)maxr);
    const uint32_t *wg = lim->maxComputeWorkGroupCount;
    if (p->kv_heads > wg[1] || (uint64_t)p->batch * splits > wg[2] ||
        (path == SSMAX_PATH_UNFUSED && (p->kv_len + 15) / 16 > wg[0]))
        return ssmax_set_error(base->ctx, SSMAX_ERR_LIMIT_EXCEEDED,
                               "kv_heads/batch/kv_len: %u, %u x %u splits, %u exceed the device's "
                               "dispatch limits (%u, %u, %u)", p->kv_heads, p->batch, splits,
                               p->kv_len, wg[0], wg[1], wg[2]);
    return SSMAX_OK;
}

/* ---- pipelines ---- */

static int get_pipeline(struct vk_dev *d, enum vk_shader_id id, uint32_t wg, uint32_t br,
                        uint32_t bc, uint32_t D, uint32_t tpr, uint32_t split, VkPipeline *out)
{
    uint32_t key[8] = { (uint32_t)id, wg, br, bc, D, tpr, split, 0 };
    for (int i = 0; i < d->npipes; i++)
        if (!memcmp(d->pipes[i].key, key, sizeof(key))) {
            *out = d->pipes[i].pipe;
            return SSMAX_OK;
        }
    if (d->npipes == d->cap_pipes) {
        int cap = d->cap_pipes ? d->cap_pipes * 2 : 16;
        struct vk_pipe *np = ssmax_calloc(d->base.ctx, (size_t)cap, sizeof(*np));
        if (!np)
            return ssmax_set_error(d->base.ctx, SSMAX_ERR_OUT_OF_HOST_MEMORY,
                                   "vulkan: out of host memory");
        if (d->pipes)
            memcpy(np, d->pipes, sizeof(*np) * (size_t)d->npipes);
        ssmax_free(d->base.ctx, d->pipes);
        d->pipes = np;
        d->cap_pipes = cap;
    }
    const struct vk_shader_code *sc = &ssmax_vk_shaders[id];
    VkShaderModuleCreateInfo smci = { .sType = VK_STRUCTURE_TYPE_SHADER_MODULE_CREATE_INFO,
                                      .codeSize = sc->size,
                                      .pCode = sc->code };
    VkShaderModule mod;
    VkResult r = d->vkCreateShaderModule(d->dev, &smci, NULL, &mod);
    if (r != VK_SUCCESS)
        return ssmax_set_error(d->base.ctx, SSMAX_ERR_KERNEL_BUILD,
                               "vulkan: vkCreateShaderModule(%s) failed: VkResult %d", sc->name,
                               (int)r);
    uint32_t vals[6] = { wg, br, bc, D, tpr, split };
    VkSpecializationMapEntry ents[6];
    for (uint32_t i = 0; i < 6; i++)
        ents[i] = (VkSpecializationMapEntry){ i, i * 4, 4 };
    VkSpecializationInfo spec = { 6, ents, sizeof(vals), vals };
    VkComputePipelineCreateInfo cpci = {
        .sType = VK_STRUCTURE_TYPE_COMPUTE_PIPELINE_CREATE_INFO,
        .stage = { .sType = VK_STRUCTURE_TYPE_PIPELINE_SHADER_STAGE_CREATE_INFO,
                   .stage = VK_SHADER_STAGE_COMPUTE_BIT,
                   .module = mod,
                   .pName = "main",
                   .pSpecializationInfo = &spec },
        .layout = d->layout,
    };
    VkPipeline pipe;
    r = d->vkCreateComputePipelines(d->dev, VK_NULL_HANDLE, 1, &cpci, NULL, &pipe);
    d->vkDestroyShaderModule(d->dev, mod, NULL);
    if (r != VK_SUCCESS)
        return ssmax_set_error(d->base.ctx, SSMAX_ERR_KERNEL_BUILD,
                               "vulkan: pipeline %s (wg %u, tiles %u,%u, D %u) failed: VkResult %d",
                               sc->name, wg, br, bc, D, (int)r);
    memcpy(d->pipes[d->npipes].key, key, sizeof(key));
    d->pipes[d->npipes++].pipe = pipe;
    *out = pipe;
    return SSMAX_OK;
}

/* ---- attention ---- */

struct push {
    uint32_t B, Hq, Hkv, Lq, Lk, G, q_pos, causal;
    uint32_t x_floor, pos_offset, floor_scale;
    float lo;
    uint32_t q_off, k_off, v_off, o_off, lse_off, want_lse;
    uint32_t row_base, split_len, nsplit, aux0, aux1;
};
_Static_assert(sizeof(struct push) == PUSH_WORDS * 4, "push constant layout");

static void dispatch(struct vk_dev *d, VkPipeline pipe, const struct push *pc, uint32_t x,
                     uint32_t y, uint32_t z)
{
    d->vkCmdBindPipeline(d->cmd, VK_PIPELINE_BIND_POINT_COMPUTE, pipe);
    d->vkCmdPushConstants(d->cmd, d->layout, VK_SHADER_STAGE_COMPUTE_BIT, 0, sizeof(*pc), pc);
    d->vkCmdDispatch(d->cmd, x, y, z);
}

static void compute_barrier(struct vk_dev *d)
{
    barrier(d, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT, VK_ACCESS_SHADER_WRITE_BIT,
            VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT,
            VK_ACCESS_SHADER_READ_BIT | VK_ACCESS_SHADER_WRITE_BIT);
}

/* One submission of an attention call: begin (timestamp, descriptor set) and end (timestamp,
 * submit, wait, add the device time). Calls whose work exceeds the context's max_work_per_submit
 * are cut into several, so no single submission runs long enough for a GPU watchdog. */
static int sub_begin(struct vk_dev *d, VkDescriptorSet set)
{
    int r = begin_cmd(d);
    if (r < 0)
        return r;
    if (d->qpool) {
        d->vkCmdResetQueryPool(d->cmd, d->qpool, 0, 2);
        d->vkCmdWriteTimestamp(d->cmd, VK_PIPELINE_STAGE_TOP_OF_PIPE_BIT, d->qpool, 0);
    }
    d->vkCmdBindDescriptorSets(d->cmd, VK_PIPELINE_BIND_POINT_COMPUTE, d->layout, 0, 1, &set, 0,
                               NULL);
    return SSMAX_OK;
}

static int sub_end(struct vk_dev *d, uint64_t *device_ns)
{
    if (d->qpool)
        d->vkCmdWriteTimestamp(d->cmd, VK_PIPELINE_STAGE_BOTTOM_OF_PIPE_BIT, d->qpool, 1);
    int r = submit_wait(d);
    if (r < 0)
        return r;
    if (d->qpool) {
        uint64_t ts[2];
        VkResult vr = d->vkGetQueryPoolResults(d->dev, d->qpool, 0, 2, sizeof(ts), ts, 8,
                                               VK_QUERY_RESULT_64_BIT | VK_QUERY_RESULT_WAIT_BIT);
        if (vr == VK_SUCCESS)
            *device_ns += (uint64_t)((double)((ts[1] - ts[0]) & d->ts_mask) *
                                     d->ph->props.limits.timestampPeriod);
    }
    return SSMAX_OK;
}

static int vk_attn(struct ssmax_dev *base, struct attn_plan *pl, const struct attn_bufs *ab,
                   uint64_t *device_ns)
{
    struct vk_dev *d = (struct vk_dev *)base;
    struct ssmax_context *ctx = base->ctx;
    const struct ssmax_attn_params *p = &pl->p;
    const uint32_t D = p->head_dim, esz = pl->elem_size, f16 = p->dtype == SSMAX_F16;
    const uint32_t maxx = d->ph->props.limits.maxComputeWorkGroupCount[0];
    const uint64_t rows = (uint64_t)p->batch * p->q_heads * p->q_len;
    struct vk_tiles t;
    int r = choose_tiles(d, D, (uint64_t)pl->group * p->q_len, pl->path != SSMAX_PATH_UNFUSED, &t);
    if (r == 0)
        r = resolve_path(d, pl, &t, &pl->path, &pl->splits);
    if (r < 0)
        return r;

    // Scratch first, so an allocation failure leaves every output untouched.
    uint32_t nsplit = 1, split_len = p->kv_len;
    uint64_t limit = d->ph->props.limits.maxStorageBufferRange;
    if (limit > (256ull << 20))
        limit = 256ull << 20;
    uint32_t bh_per = 1, i_count = p->q_len;
    if (pl->path == SSMAX_PATH_SPLIT_KV) {
        split_len = (p->kv_len + pl->splits - 1) / pl->splits;
        nsplit = (p->kv_len + split_len - 1) / split_len;
        if ((r = buf_ensure(d, &d->scr0, nsplit * rows * D * 4, 0)) < 0 ||
            (r = buf_ensure(d, &d->scr1, nsplit * rows * 8, 0)) < 0)
            return r;
    } else if (pl->path == SSMAX_PATH_UNFUSED) {
        uint64_t per_bh = (uint64_t)p->q_len * p->kv_len * 4;
        if (per_bh <= limit) {
            uint64_t n = limit / per_bh;
            bh_per = (uint32_t)(n < (uint64_t)p->batch * p->q_heads ? n : p->batch * p->q_heads);
            if (bh_per > 65535)
                bh_per = 65535;
        } else {
            i_count = (uint32_t)(limit / ((uint64_t)p->kv_len * 4));
        }
        if ((r = buf_ensure(d, &d->scr0, (uint64_t)bh_per * i_count * p->kv_len * 4, 0)) < 0)
            return r;
    }
    if ((r = buf_ensure(d, &d->coef, 2ull * p->q_heads * 4, 1)) < 0)
        return r;
    memcpy(d->coef.map, pl->coef, 2ull * p->q_heads * 4);

    // Descriptors: one set for every pipeline of this call (they share the layout).
    d->vkResetDescriptorPool(d->dev, d->dpool, 0);
    VkDescriptorSet set;
    VkDescriptorSetAllocateInfo dsai = { .sType = VK_STRUCTURE_TYPE_DESCRIPTOR_SET_ALLOCATE_INFO,
                                         .descriptorPool = d->dpool,
                                         .descriptorSetCount = 1,
                                         .pSetLayouts = &d->dsl };
    VkResult vr = d->vkAllocateDescriptorSets(d->dev, &dsai, &set);
    if (vr != VK_SUCCESS)
        return vk_err(ctx, vr, "vkAllocateDescriptorSets");
    struct vk_bind bq = bind_of(d, ab->q_off, pl->q_bytes, esz),
                   bk = bind_of(d, ab->k_off, pl->kv_bytes, esz),
                   bv = bind_of(d, ab->v_off, pl->kv_bytes, esz),
                   bo = bind_of(d, ab->o_off, pl->o_bytes, esz),
                   bl = pl->want_lse ? bind_of(d, ab->lse_off, pl->lse_bytes, 4)
                                     : (struct vk_bind){ 0, VK_WHOLE_SIZE, 0 };
    VkDescriptorBufferInfo bi[NUM_BINDINGS] = {
        [BIND_Q] = { ((struct vk_buf *)ab->q)->buf, bq.base, bq.range },
        [BIND_K] = { ((struct vk_buf *)ab->k)->buf, bk.base, bk.range },
        [BIND_V] = { ((struct vk_buf *)ab->v)->buf, bv.base, bv.range },
        [BIND_O] = { ((struct vk_buf *)ab->o)->buf, bo.base, bo.range },
        [BIND_LSE] = { pl->want_lse ? ((struct vk_buf *)ab->lse)->buf : d->dummy.buf, bl.base,
                       bl.range },
        [BIND_COEF] = { d->coef.buf, 0, VK_WHOLE_SIZE },
        [BIND_SCR0] = { d->scr0.buf ? d->scr0.buf : d->dummy.buf, 0, VK_WHOLE_SIZE },
        [BIND_SCR1] = { d->scr1.buf ? d->scr1.buf : d->dummy.buf, 0, VK_WHOLE_SIZE },
    };
    VkWriteDescriptorSet w[NUM_BINDINGS];
    for (uint32_t i = 0; i < NUM_BINDINGS; i++)
        w[i] = (VkWriteDescriptorSet){ .sType = VK_STRUCTURE_TYPE_WRITE_DESCRIPTOR_SET,
                                       .dstSet = set,
                                       .dstBinding = i,
                                       .descriptorCount = 1,
                                       .descriptorType = VK_DESCRIPTOR_TYPE_STORAGE_BUFFER,
                                       .pBufferInfo = &bi[i] };
    d->vkUpdateDescriptorSets(d->dev, NUM_BINDINGS, w, 0, NULL);

    struct push pc = {
        p->batch, p->q_heads, p->kv_heads, p->q_len, p->kv_len, pl->group, pl->q_pos, (uint32_t)p->causal,
        pl->x_floor, p->pos_offset, p->floor_scale ? p->floor_scale : 1, pl->lo,
        bq.elem_off, bk.elem_off, bv.elem_off, bo.elem_off, bl.elem_off, (uint32_t)pl->want_lse,
        0, split_len, nsplit, 0, 0,
    };

    // Pipelines before recording (creation may fail; nothing is submitted then).
    VkPipeline pf = 0, pm = 0, pqk = 0, psm = 0, ppv = 0;
    if (pl->path == SSMAX_PATH_FUSED || pl->path == SSMAX_PATH_SPLIT_KV) {
        // tiles kernel: the row max by subgroup shuffles where subgroups hold whole 8-lane clusters
        const uint32_t sg = d->ph->subgroup_size;
        const int sgred = d->ph->shuffle && sg >= 8 && !(sg & (sg - 1)) && !no_subgroups();
        enum vk_shader_id fid = t.rows  ? (f16 ? VK_SH_FLASHR_F16 : VK_SH_FLASHR_F32)
                                : sgred ? (f16 ? VK_SH_FLASHS_F16 : VK_SH_FLASHS_F32)
                                        : (f16 ? VK_SH_FLASH_F16 : VK_SH_FLASH_F32);
        // rows kernel: K and V 4 words a read (WIDE) when every such read is aligned
        const uint32_t wide = t.rows && (D / d->ph->subgroup_size) % 4 == 0 &&
                              bk.elem_off % 4 == 0 && bv.elem_off % 4 == 0;
        r = get_pipeline(d, fid, t.rows ? d->ph->subgroup_size : 16, t.br, t.bc, D, wide,
                         pl->path == SSMAX_PATH_SPLIT_KV, &pf);
        if (r == 0 && pl->path == SSMAX_PATH_SPLIT_KV)
            r = get_pipeline(d, f16 ? VK_SH_MERGE_F16 : VK_SH_MERGE_F32, 64, 1, 1, D, 1, 0, &pm);
    } else {
        r = get_pipeline(d, f16 ? VK_SH_QK_F16 : VK_SH_QK_F32, 256, 1, 1, D, 1, 0, &pqk);
        if (r == 0)
            r = get_pipeline(d, VK_SH_SOFTMAX, 64, 1, 1, D, 1, 0, &psm);
        if (r == 0)
            r = get_pipeline(d, f16 ? VK_SH_PV_F16 : VK_SH_PV_F32, t.br * t.tpr, t.br, t.bc, D,
                             t.tpr, 0, &ppv);
    }
    if (r < 0)
        return r;

    *device_ns = 0;
    const uint64_t cap = ctx->params.max_work_per_submit ? ctx->params.max_work_per_submit
                                                          : SSMAX_DEFAULT_MAX_WORK;
    if ((r = sub_begin(d, set)) < 0)
        return r;
    if (pl->path != SSMAX_PATH_UNFUSED) {
        uint32_t blocks = (uint32_t)(((uint64_t)pl->group * p->q_len + t.br - 1) / t.br);
        // multiply-adds of one row block over every KV head and batch item
        uint64_t per_block = 2ull * t.br * p->kv_len * D * p->kv_heads * p->batch;
        uint64_t chunk = cap / per_block ? cap / per_block : 1;
        if (chunk > maxx)
            chunk = maxx;
        for (uint32_t x0 = 0; x0 < blocks; x0 += (uint32_t)chunk) {
            if (x0 && ((r = sub_end(d, device_ns)) < 0 || (r = sub_begin(d, set)) < 0))
                return r;
            pc.row_base = x0;
            dispatch(d, pf, &pc, blocks - x0 < chunk ? blocks - x0 : (uint32_t)chunk,
                     p->kv_heads, p->batch * nsplit);
        }
        if (pl->path == SSMAX_PATH_SPLIT_KV) {
            compute_barrier(d);
            for (uint64_t x0 = 0; x0 < rows; x0 += maxx) {
                pc.row_base = (uint32_t)x0;
                dispatch(d, pm, &pc, (uint32_t)(rows - x0 < maxx ? rows - x0 : maxx), 1, 1);
            }
        }
    } else {
        const uint32_t nbh = p->batch * p->q_heads;
        struct vk_buf *probs = ab->probs;
        uint64_t work = 0;
        for (uint32_t bh0 = 0; bh0 < nbh; bh0 += bh_per) {
            uint32_t nb = nbh - bh0 < bh_per ? nbh - bh0 : bh_per;
            for (uint32_t i0 = 0; i0 < p->q_len; i0 += i_count) {
                uint32_t ni = p->q_len - i0 < i_count ? p->q_len - i0 : i_count;
                if (work >= cap) { // a new submission also orders it after the last chunk
                    if ((r = sub_end(d, device_ns)) < 0 || (r = sub_begin(d, set)) < 0)
                        return r;
                    work = 0;
                } else if (bh0 || i0) { // the previous chunk's P·V (and copy) read the scratch
                    barrier(d, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT | VK_PIPELINE_STAGE_TRANSFER_BIT,
                            0, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT, 0);
                }
                work += 2ull * nb * ni * p->kv_len * D;
                pc.row_base = bh0, pc.aux0 = i0, pc.aux1 = ni;
                dispatch(d, pqk, &pc, (p->kv_len + 15) / 16, (ni + 15) / 16, nb);
                compute_barrier(d);
                dispatch(d, psm, &pc, ni, nb, 1);
                compute_barrier(d);
                dispatch(d, ppv, &pc, (ni + t.br - 1) / t.br, nb, 1);
                if (probs) {
                    barrier(d, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT, VK_ACCESS_SHADER_WRITE_BIT,
                            VK_PIPELINE_STAGE_TRANSFER_BIT, VK_ACCESS_TRANSFER_READ_BIT);
                    uint64_t row0 = (uint64_t)bh0 * p->q_len + i0;
                    VkBufferCopy reg = { 0, ab->probs_off + row0 * p->kv_len * 4,
                                         (uint64_t)nb * ni * p->kv_len * 4 };
                    d->vkCmdCopyBuffer(d->cmd, d->scr0.buf, probs->buf, 1, &reg);
                }
            }
        }
    }
    return sub_end(d, device_ns);
}

const struct ssmax_backend_fns ssmax_backend_vulkan = {
    .name = "vulkan",
    .id = SSMAX_BACKEND_VULKAN,
    .init = vk_init,
    .uninit = vk_uninit,
    .enumerate = vk_enumerate,
    .open = vk_open,
    .close = vk_close,
    .buf_create = vk_buf_create,
    .buf_destroy = vk_buf_destroy,
    .buf_write = vk_buf_write,
    .buf_read = vk_buf_read,
    .attn_supported = vk_attn_supported,
    .attn = vk_attn,
};
