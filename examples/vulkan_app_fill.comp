#version 450
// The example application's own compute shader (examples/vulkan_app.c): fills `count` floats of
// the storage buffer, from float index `first` on, with a value in [-1, 1) that depends only on
// the element's index within its tensor and the tensor's number. The host computes the same
// values bit for bit (fill_value in vulkan_app.c): the hash is integer arithmetic, and the float
// steps are exact (a 24-bit integer times 2^-23, minus 1).
layout(local_size_x = 64) in;

layout(std430, set = 0, binding = 0) writeonly buffer Data { float data[]; };

layout(push_constant) uniform Push {
    uint first;  // float index of the tensor's element 0 in the buffer
    uint count;  // elements to fill
    uint tensor; // 0: Q, 1: K, 2: V
} pc;

// A 32-bit integer hash (lowbias32, Chris Wellons).
uint hash(uint x)
{
    x ^= x >> 16;
    x *= 0x7feb352du;
    x ^= x >> 15;
    x *= 0x846ca68bu;
    x ^= x >> 16;
    return x;
}

void main()
{
    uint i = gl_GlobalInvocationID.x;
    if (i >= pc.count)
        return;
    data[pc.first + i] = float(hash(i * 4u + pc.tensor) >> 8) * (1.0 / 8388608.0) - 1.0;
}
