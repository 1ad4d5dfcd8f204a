/*
 * Vulkan: the loader (dlopen, so a missing loader only empties the device list), instances with
 * the optional validation layer and our debug messenger, and the physical-device listing.
 */
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "vk_internal.h"

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

static int has_dev_ext(const struct vk_inst *vi, VkPhysicalDevice pd, const char *name)
{
    uint32_t n = 0;
    if (vi->vkEnumerateDeviceExtensionProperties(pd, NULL, &n, NULL) != VK_SUCCESS || !n)
        return 0;
    VkExtensionProperties *e = calloc(n, sizeof(*e));
    int found = 0;
    if (e && vi->vkEnumerateDeviceExtensionProperties(pd, NULL, &n, e) == VK_SUCCESS)
        for (uint32_t i = 0; i < n; i++)
            found |= !strcmp(e[i].extensionName, name);
    free(e);
    return found;
}

/* Whether the device compiles pipelines but cannot run them, by what it offers: no memory type a
 * buffer could be mapped from (we map user buffers, or stage through host-visible memory), or no
 * queue family with compute. RADV's null winsys (RADV_FORCE_FAMILY=navi21 and the like on a
 * machine without that GPU, listed as "Null hardware (RADV NAVI21)") is such a device: it reports
 * no memory heaps or types at all (and fails vkCreateFence), but compiles with ACO and reports
 * the compiler's statistics; so the device name is not what is tested. */
static void compile_only(const struct vk_inst *vi, struct vk_phys *ph,
                         const VkPhysicalDeviceMemoryProperties *mp)
{
    int host_visible = 0, compute = 0;
    for (uint32_t i = 0; i < mp->memoryTypeCount; i++)
        host_visible |= (mp->memoryTypes[i].propertyFlags & VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT) &&
                        mp->memoryHeaps[mp->memoryTypes[i].heapIndex].size > 0;
    uint32_t nq = 0;
    vi->vkGetPhysicalDeviceQueueFamilyProperties(ph->pd, &nq, NULL);
    VkQueueFamilyProperties qf[16];
    nq = nq > 16 ? 16 : nq;
    vi->vkGetPhysicalDeviceQueueFamilyProperties(ph->pd, &nq, qf);
    for (uint32_t i = 0; i < nq; i++)
        compute |= (qf[i].queueFlags & VK_QUEUE_COMPUTE_BIT) && qf[i].queueCount > 0;
    ph->compile_only = !host_visible || !compute;
    if (!mp->memoryTypeCount)
        snprintf(ph->cannot_run, sizeof(ph->cannot_run), "the driver reports no memory types%s",
                 !compute ? " and no compute queue" : "");
    else if (!host_visible)
        snprintf(ph->cannot_run, sizeof(ph->cannot_run),
                 "no memory type the host can map%s", !compute ? ", and no compute queue" : "");
    else if (!compute)
        snprintf(ph->cannot_run, sizeof(ph->cannot_run), "no queue family with compute");
}

void vk_fill_info(struct vk_inst *vi, int idx)
{
    struct vk_phys *ph = &vi->phys[idx];
    struct ssmax_device_info *d = &vi->infos[idx];
    VkPhysicalDeviceDriverProperties drv = { .sType =
                                                 VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_DRIVER_PROPERTIES };
    VkPhysicalDeviceIDProperties ids = { .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_ID_PROPERTIES };
    VkPhysicalDeviceMaintenance3Properties m3 = {
        .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_MAINTENANCE_3_PROPERTIES, .pNext = &ids
    };
    VkPhysicalDeviceSubgroupProperties sg = {
        .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SUBGROUP_PROPERTIES, .pNext = &m3
    };
    VkPhysicalDeviceProperties2 p2 = { .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_PROPERTIES_2,
                                       .pNext = &sg };
    VkPhysicalDeviceSubgroupSizeControlPropertiesEXT sgc = {
        .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SUBGROUP_SIZE_CONTROL_PROPERTIES_EXT
    };
    VkPhysicalDeviceSubgroupSizeControlFeaturesEXT sgf = {
        .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SUBGROUP_SIZE_CONTROL_FEATURES_EXT
    };
    vi->vkGetPhysicalDeviceProperties(ph->pd, &ph->props);
    int have12 = ph->props.apiVersion >= VK_API_VERSION_1_2;
    const int have_sgc = has_dev_ext(vi, ph->pd, VK_EXT_SUBGROUP_SIZE_CONTROL_EXTENSION_NAME);
    if (have12)
        ids.pNext = &drv;
    if (have_sgc)
        sgc.pNext = p2.pNext, p2.pNext = &sgc;
    // Compute units, for the planner's split of the keys (decode): AMD and NVIDIA say.
    VkPhysicalDeviceShaderCorePropertiesAMD amd = {
        .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SHADER_CORE_PROPERTIES_AMD
    };
    VkPhysicalDeviceShaderSMBuiltinsPropertiesNV nv = {
        .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SHADER_SM_BUILTINS_PROPERTIES_NV
    };
    if (has_dev_ext(vi, ph->pd, VK_AMD_SHADER_CORE_PROPERTIES_EXTENSION_NAME))
        amd.pNext = p2.pNext, p2.pNext = &amd;
    if (has_dev_ext(vi, ph->pd, VK_NV_SHADER_SM_BUILTINS_EXTENSION_NAME))
        nv.pNext = p2.pNext, p2.pNext = &nv;
    vi->vkGetPhysicalDeviceProperties2(ph->pd, &p2);
    VkPhysicalDevice16BitStorageFeatures s16 = {
        .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_16BIT_STORAGE_FEATURES
    };
    VkPhysicalDeviceShaderFloat16Int8Features f16 = {
        .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SHADER_FLOAT16_INT8_FEATURES, .pNext = &s16
    };
    VkPhysicalDeviceFeatures2 f2 = { .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_FEATURES_2,
                                     .pNext = have12 ? (void *)&f16 : (void *)&s16 };
    if (have_sgc)
        sgf.pNext = f2.pNext, f2.pNext = &sgf;
    vi->vkGetPhysicalDeviceFeatures2(ph->pd, &f2);
    VkPhysicalDeviceMemoryProperties mp;
    vi->vkGetPhysicalDeviceMemoryProperties(ph->pd, &mp);

    const VkPhysicalDeviceLimits *lim = &ph->props.limits;
    memset(d, 0, sizeof(*d));
    d->backend = SSMAX_BACKEND_VULKAN;
    d->index = idx;
    d->type = map_type(ph->props.deviceType);
    d->compute_units = amd.shaderEngineCount * amd.shaderArraysPerEngineCount *
                           amd.computeUnitsPerShaderArray +
                       nv.shaderSMCount;
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
    // Vulkan 1.1 core. An all-zero UUID says nothing (RADV's null hardware reports one).
    memcpy(d->device_uuid, ids.deviceUUID, 16);
    memcpy(d->driver_uuid, ids.driverUUID, 16);
    for (int i = 0; i < 16; i++) {
        d->has_device_uuid |= ids.deviceUUID[i] != 0;
        d->has_driver_uuid |= ids.driverUUID[i] != 0;
    }
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
    ph->sg_control = have_sgc && sgf.subgroupSizeControl &&
                     (sgc.requiredSubgroupSizeStages & VK_SHADER_STAGE_COMPUTE_BIT) &&
                     sgc.minSubgroupSize >= 1 && sgc.minSubgroupSize <= sgc.maxSubgroupSize;
    ph->sg_min = sgc.minSubgroupSize, ph->sg_max = sgc.maxSubgroupSize;
    ph->sg_max_subgroups = sgc.maxComputeWorkgroupSubgroups;
    ph->max_alloc = m3.maxMemoryAllocationSize;
    ph->exec_props = has_dev_ext(vi, ph->pd, VK_KHR_PIPELINE_EXECUTABLE_PROPERTIES_EXTENSION_NAME);
    if (ph->exec_props) {
        VkPhysicalDevicePipelineExecutablePropertiesFeaturesKHR pe = {
            .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_PIPELINE_EXECUTABLE_PROPERTIES_FEATURES_KHR
        };
        VkPhysicalDeviceFeatures2 pf = { .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_FEATURES_2,
                                         .pNext = &pe };
        vi->vkGetPhysicalDeviceFeatures2(ph->pd, &pf);
        ph->exec_props = pe.pipelineExecutableInfo == VK_TRUE;
    }
    compile_only(vi, ph, &mp);
    d->compile_only = (uint8_t)ph->compile_only;
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
        vk_fill_info(vi, vi->ndev);
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

int vk_init(struct ssmax_context *ctx, void **bpriv)
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

void vk_uninit(struct ssmax_context *ctx, void *bpriv)
{
    (void)ctx;
    struct vk_inst *vi = bpriv;
    if (vi && vi->owned) // the shared instance is kept until exit (see above)
        inst_free(vi);
}

const struct ssmax_device_info *vk_devices(void *bpriv, int *count)
{
    const struct vk_inst *vi = bpriv;
    *count = vi->ndev;
    return vi->infos;
}
