/* Colormaps, CAM overlays and heatmaps.
 *
 * The overlay follows pytorch-grad-cam's show_cam_on_image, the reference
 * users compare against:
 *   heatmap = applyColorMap(uint8(255 * mask), COLORMAP_JET) / 255
 *   cam = (1 - image_weight) * heatmap + image_weight * img;  cam /= max(cam)
 *   out = uint8(255 * cam)
 * with our alpha = 1 - image_weight.  The mask is upsampled like cv2.resize
 * (bilinear, half-pixel centers, edge clamp), straight to display size.
 *
 * Tables (RGB, index = uint8 mask value):
 *   jet      OpenCV's Jet (colormap.cpp: piecewise-linear 256-sample base,
 *            interp1 and convertTo(CV_8U, 255) emulated in float32 with
 *            round-half-even), so ties round exactly as cv2 does;
 *   turbo    Google's published polynomial approximation (Mikhailov / Du,
 *            Apache-2.0), round(255 * clamp(p(i/255)));
 *   viridis, inferno  matplotlib's maps through the CC0 degree-6 minimax
 *            fits by Matt Zucker (shadertoy WlfXRN), same rounding.
 * Each table is fully determined by those formulas. */
#include "imageio/imageio_internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static const uint8_t LUT_JET[256 * 3] = {
    0, 0, 128, 0, 0, 132, 0, 0, 136, 0, 0, 140, 0, 0, 144, 0, 0, 148, 0, 0, 152, 0, 0, 156,
    0, 0, 160, 0, 0, 164, 0, 0, 168, 0, 0, 172, 0, 0, 176, 0, 0, 180, 0, 0, 184, 0, 0, 188,
    0, 0, 192, 0, 0, 196, 0, 0, 200, 0, 0, 204, 0, 0, 208, 0, 0, 212, 0, 0, 216, 0, 0, 220,
    0, 0, 224, 0, 0, 228, 0, 0, 232, 0, 0, 236, 0, 0, 240, 0, 0, 244, 0, 0, 248, 0, 0, 252,
    0, 0, 255, 0, 4, 255, 0, 8, 255, 0, 12, 255, 0, 16, 255, 0, 20, 255, 0, 24, 255, 0, 28, 255,
    0, 32, 255, 0, 36, 255, 0, 40, 255, 0, 44, 255, 0, 48, 255, 0, 52, 255, 0, 56, 255, 0, 60, 255,
    0, 64, 255, 0, 68, 255, 0, 72, 255, 0, 76, 255, 0, 80, 255, 0, 84, 255, 0, 88, 255, 0, 92, 255,
    0, 96, 255, 0, 100, 255, 0, 104, 255, 0, 108, 255, 0, 112, 255, 0, 116, 255, 0, 120, 255, 0, 124, 255,
    0, 128, 255, 0, 132, 255, 0, 136, 255, 0, 140, 255, 0, 144, 255, 0, 148, 255, 0, 152, 255, 0, 156, 255,
    0, 160, 255, 0, 164, 255, 0, 168, 255, 0, 172, 255, 0, 176, 255, 0, 180, 255, 0, 184, 255, 0, 188, 255,
    0, 192, 255, 0, 196, 255, 0, 200, 255, 0, 204, 255, 0, 208, 255, 0, 212, 255, 0, 216, 255, 0, 220, 255,
    0, 224, 255, 0, 228, 255, 0, 232, 255, 0, 236, 255, 0, 240, 255, 0, 244, 255, 0, 248, 255, 0, 252, 255,
    2, 255, 254, 6, 255, 250, 10, 255, 246, 14, 255, 242, 18, 255, 238, 22, 255, 234, 26, 255, 230, 30, 255, 226,
    34, 255, 222, 38, 255, 218, 42, 255, 214, 46, 255, 210, 50, 255, 206, 54, 255, 202, 58, 255, 198, 62, 255, 194,
    66, 255, 190, 70, 255, 186, 74, 255, 182, 78, 255, 178, 82, 255, 174, 86, 255, 170, 90, 255, 166, 94, 255, 162,
    98, 255, 158, 102, 255, 154, 106, 255, 150, 110, 255, 146, 114, 255, 142, 118, 255, 138, 122, 255, 134, 126, 255, 130,
    130, 255, 126, 134, 255, 122, 138, 255, 118, 142, 255, 114, 146, 255, 110, 150, 255, 106, 154, 255, 102, 158, 255, 98,
    162, 255, 94, 166, 255, 90, 170, 255, 86, 174, 255, 82, 178, 255, 78, 182, 255, 74, 186, 255, 70, 190, 255, 66,
    194, 255, 62, 198, 255, 58, 202, 255, 54, 206, 255, 50, 210, 255, 46, 214, 255, 42, 218, 255, 38, 222, 255, 34,
    226, 255, 30, 230, 255, 26, 234, 255, 22, 238, 255, 18, 242, 255, 14, 246, 255, 10, 250, 255, 6, 254, 255, 1,
    255, 252, 0, 255, 248, 0, 255, 244, 0, 255, 240, 0, 255, 236, 0, 255, 232, 0, 255, 228, 0, 255, 224, 0,
    255, 220, 0, 255, 216, 0, 255, 212, 0, 255, 208, 0, 255, 204, 0, 255, 200, 0, 255, 196, 0, 255, 192, 0,
    255, 188, 0, 255, 184, 0, 255, 180, 0, 255, 176, 0, 255, 172, 0, 255, 168, 0, 255, 164, 0, 255, 160, 0,
    255, 156, 0, 255, 152, 0, 255, 148, 0, 255, 144, 0, 255, 140, 0, 255, 136, 0, 255, 132, 0, 255, 128, 0,
    255, 124, 0, 255, 120, 0, 255, 116, 0, 255, 112, 0, 255, 108, 0, 255, 104, 0, 255, 100, 0, 255, 96, 0,
    255, 92, 0, 255, 88, 0, 255, 84, 0, 255, 80, 0, 255, 76, 0, 255, 72, 0, 255, 68, 0, 255, 64, 0,
    255, 60, 0, 255, 56, 0, 255, 52, 0, 255, 48, 0, 255, 44, 0, 255, 40, 0, 255, 36, 0, 255, 32, 0,
    255, 28, 0, 255, 24, 0, 255, 20, 0, 255, 16, 0, 255, 12, 0, 255, 8, 0, 255, 4, 0, 255, 0, 0,
    252, 0, 0, 248, 0, 0, 244, 0, 0, 240, 0, 0, 236, 0, 0, 232, 0, 0, 228, 0, 0, 224, 0, 0,
    220, 0, 0, 216, 0, 0, 212, 0, 0, 208, 0, 0, 204, 0, 0, 200, 0, 0, 196, 0, 0, 192, 0, 0,
    188, 0, 0, 184, 0, 0, 180, 0, 0, 176, 0, 0, 172, 0, 0, 168, 0, 0, 164, 0, 0, 160, 0, 0,
    156, 0, 0, 152, 0, 0, 148, 0, 0, 144, 0, 0, 140, 0, 0, 136, 0, 0, 132, 0, 0, 128, 0, 0,
};

static const uint8_t LUT_TURBO[256 * 3] = {
    35, 23, 27, 39, 26, 40, 43, 28, 52, 47, 30, 63, 51, 32, 74, 54, 35, 85, 57, 37, 95, 59, 40, 105,
    62, 42, 114, 64, 44, 123, 66, 47, 132, 68, 49, 140, 69, 52, 148, 71, 55, 155, 72, 57, 162, 73, 60, 169,
    73, 62, 175, 74, 65, 181, 74, 68, 187, 75, 70, 193, 75, 73, 198, 75, 76, 203, 75, 79, 207, 74, 81, 211,
    74, 84, 215, 74, 87, 219, 73, 89, 223, 73, 92, 226, 72, 95, 229, 71, 98, 232, 70, 101, 234, 69, 103, 237,
    68, 106, 239, 67, 109, 240, 66, 112, 242, 65, 114, 244, 64, 117, 245, 63, 120, 246, 62, 123, 247, 61, 125, 248,
    59, 128, 248, 58, 131, 249, 57, 134, 249, 56, 136, 249, 55, 139, 249, 53, 142, 249, 52, 144, 248, 51, 147, 248,
    50, 150, 247, 49, 152, 246, 48, 155, 246, 47, 158, 245, 46, 160, 244, 45, 163, 242, 44, 165, 241, 43, 168, 240,
    42, 170, 238, 42, 173, 237, 41, 175, 235, 40, 178, 234, 40, 180, 232, 39, 182, 230, 39, 185, 228, 38, 187, 226,
    38, 189, 224, 37, 192, 222, 37, 194, 220, 37, 196, 218, 37, 198, 215, 37, 200, 213, 37, 202, 211, 37, 205, 209,
    37, 207, 206, 38, 209, 204, 38, 210, 201, 38, 212, 199, 39, 214, 196, 39, 216, 194, 40, 218, 191, 41, 220, 189,
    42, 221, 186, 43, 223, 184, 44, 225, 181, 45, 226, 178, 46, 228, 176, 47, 229, 173, 48, 231, 171, 49, 232, 168,
    51, 234, 166, 52, 235, 163, 54, 236, 160, 55, 238, 158, 57, 239, 155, 59, 240, 153, 61, 241, 150, 63, 242, 148,
    65, 243, 145, 67, 244, 143, 69, 245, 140, 71, 246, 138, 73, 247, 135, 75, 248, 133, 78, 249, 131, 80, 249, 128,
    82, 250, 126, 85, 250, 124, 87, 251, 121, 90, 251, 119, 93, 252, 117, 95, 252, 115, 98, 253, 113, 101, 253, 110,
    104, 253, 108, 106, 253, 106, 109, 254, 104, 112, 254, 102, 115, 254, 100, 118, 254, 98, 121, 254, 96, 124, 253, 94,
    127, 253, 93, 130, 253, 91, 133, 253, 89, 136, 252, 87, 139, 252, 86, 142, 252, 84, 145, 251, 82, 149, 251, 81,
    152, 250, 79, 155, 249, 78, 158, 249, 76, 161, 248, 75, 164, 247, 73, 167, 246, 72, 170, 246, 70, 173, 245, 69,
    176, 244, 68, 179, 243, 66, 182, 242, 65, 185, 240, 64, 188, 239, 63, 191, 238, 62, 194, 237, 60, 197, 235, 59,
    200, 234, 58, 203, 233, 57, 205, 231, 56, 208, 230, 55, 211, 228, 54, 213, 227, 53, 216, 225, 52, 219, 223, 52,
    221, 222, 51, 223, 220, 50, 226, 218, 49, 228, 216, 48, 230, 214, 48, 233, 212, 47, 235, 210, 46, 237, 208, 45,
    239, 206, 45, 241, 204, 44, 243, 202, 43, 244, 200, 43, 246, 198, 42, 248, 196, 42, 249, 193, 41, 251, 191, 40,
    252, 189, 40, 253, 186, 39, 255, 184, 39, 255, 181, 38, 255, 179, 38, 255, 177, 37, 255, 174, 37, 255, 172, 36,
    255, 169, 36, 255, 166, 35, 255, 164, 35, 255, 161, 34, 255, 159, 34, 255, 156, 34, 255, 153, 33, 255, 151, 33,
    255, 148, 32, 255, 145, 32, 255, 142, 31, 255, 140, 31, 255, 137, 30, 255, 134, 30, 255, 131, 30, 255, 129, 29,
    255, 126, 29, 255, 123, 28, 255, 120, 28, 255, 117, 27, 255, 115, 27, 255, 112, 26, 254, 109, 26, 252, 106, 26,
    251, 104, 25, 249, 101, 25, 248, 98, 24, 246, 95, 24, 244, 92, 23, 243, 90, 23, 241, 87, 22, 239, 84, 22,
    237, 82, 21, 235, 79, 20, 233, 76, 20, 230, 74, 19, 228, 71, 19, 226, 69, 18, 224, 66, 18, 221, 64, 17,
    219, 61, 16, 216, 59, 16, 214, 56, 15, 211, 54, 15, 209, 52, 14, 206, 49, 13, 203, 47, 13, 201, 45, 12,
    198, 43, 11, 196, 41, 11, 193, 39, 10, 190, 37, 10, 188, 35, 9, 185, 33, 8, 183, 31, 8, 180, 29, 7,
    177, 28, 6, 175, 26, 6, 172, 24, 5, 170, 23, 4, 168, 22, 4, 165, 20, 3, 163, 19, 2, 161, 18, 2,
    159, 17, 1, 157, 16, 0, 155, 15, 0, 154, 14, 0, 152, 14, 0, 150, 13, 0, 149, 12, 0, 148, 12, 0,
    147, 12, 0, 146, 12, 0, 145, 11, 0, 145, 12, 0, 144, 12, 0, 144, 12, 0, 144, 12, 0, 144, 13, 0,
};

static const uint8_t LUT_VIRIDIS[256 * 3] = {
    71, 1, 85, 71, 3, 87, 71, 4, 88, 71, 6, 89, 71, 7, 91, 71, 8, 92, 71, 10, 93, 71, 11, 95,
    72, 13, 96, 72, 14, 97, 72, 15, 99, 72, 17, 100, 72, 18, 101, 72, 20, 103, 72, 21, 104, 72, 22, 105,
    72, 24, 106, 72, 25, 108, 72, 26, 109, 72, 28, 110, 72, 29, 111, 72, 31, 112, 72, 32, 113, 72, 33, 114,
    72, 35, 116, 72, 36, 117, 72, 37, 118, 72, 39, 119, 71, 40, 120, 71, 41, 121, 71, 42, 121, 71, 44, 122,
    71, 45, 123, 71, 46, 124, 71, 48, 125, 70, 49, 126, 70, 50, 127, 70, 51, 127, 70, 53, 128, 70, 54, 129,
    69, 55, 129, 69, 56, 130, 69, 58, 131, 69, 59, 131, 68, 60, 132, 68, 61, 133, 68, 62, 133, 68, 63, 134,
    67, 65, 134, 67, 66, 135, 67, 67, 135, 66, 68, 136, 66, 69, 136, 65, 70, 136, 65, 72, 137, 65, 73, 137,
    64, 74, 138, 64, 75, 138, 63, 76, 138, 63, 77, 139, 63, 78, 139, 62, 79, 139, 62, 80, 139, 61, 81, 140,
    61, 82, 140, 60, 84, 140, 60, 85, 140, 59, 86, 140, 59, 87, 141, 58, 88, 141, 58, 89, 141, 57, 90, 141,
    57, 91, 141, 56, 92, 141, 56, 93, 141, 55, 94, 142, 54, 95, 142, 54, 96, 142, 53, 97, 142, 53, 98, 142,
    52, 99, 142, 52, 100, 142, 51, 101, 142, 50, 102, 142, 50, 103, 142, 49, 104, 142, 49, 105, 142, 48, 106, 142,
    48, 107, 142, 47, 108, 142, 46, 109, 142, 46, 110, 142, 45, 111, 142, 45, 112, 142, 44, 113, 142, 44, 114, 142,
    43, 115, 142, 43, 116, 142, 42, 116, 142, 41, 117, 142, 41, 118, 142, 40, 119, 142, 40, 120, 142, 39, 121, 142,
    39, 122, 142, 38, 123, 142, 38, 124, 141, 37, 125, 141, 37, 126, 141, 37, 127, 141, 36, 128, 141, 36, 129, 141,
    35, 130, 141, 35, 131, 141, 34, 132, 141, 34, 133, 141, 34, 134, 141, 33, 134, 141, 33, 135, 140, 33, 136, 140,
    33, 137, 140, 32, 138, 140, 32, 139, 140, 32, 140, 140, 32, 141, 140, 31, 142, 140, 31, 143, 139, 31, 144, 139,
    31, 145, 139, 31, 146, 139, 31, 147, 139, 31, 148, 139, 31, 148, 138, 31, 149, 138, 31, 150, 138, 31, 151, 138,
    31, 152, 137, 31, 153, 137, 31, 154, 137, 31, 155, 137, 32, 156, 136, 32, 157, 136, 32, 158, 136, 32, 159, 136,
    33, 160, 135, 33, 161, 135, 33, 162, 135, 34, 162, 134, 34, 163, 134, 35, 164, 133, 35, 165, 133, 36, 166, 133,
    37, 167, 132, 37, 168, 132, 38, 169, 131, 39, 170, 131, 39, 171, 130, 40, 172, 130, 41, 172, 129, 42, 173, 128,
    43, 174, 128, 43, 175, 127, 44, 176, 127, 45, 177, 126, 46, 178, 125, 48, 179, 125, 49, 180, 124, 50, 180, 123,
    51, 181, 122, 52, 182, 122, 53, 183, 121, 55, 184, 120, 56, 185, 119, 58, 186, 118, 59, 186, 117, 60, 187, 116,
    62, 188, 115, 63, 189, 114, 65, 190, 113, 67, 191, 112, 68, 191, 111, 70, 192, 110, 72, 193, 109, 74, 194, 108,
    75, 195, 107, 77, 195, 105, 79, 196, 104, 81, 197, 103, 83, 198, 102, 85, 198, 100, 87, 199, 99, 89, 200, 98,
    91, 201, 96, 94, 201, 95, 96, 202, 94, 98, 203, 92, 100, 204, 91, 103, 204, 89, 105, 205, 88, 107, 206, 86,
    110, 206, 85, 112, 207, 83, 115, 208, 82, 117, 208, 80, 120, 209, 78, 122, 210, 77, 125, 210, 75, 127, 211, 74,
    130, 211, 72, 132, 212, 70, 135, 213, 69, 138, 213, 67, 141, 214, 65, 143, 214, 64, 146, 215, 62, 149, 215, 61,
    152, 216, 59, 154, 217, 57, 157, 217, 56, 160, 218, 54, 163, 218, 52, 166, 219, 51, 168, 219, 49, 171, 220, 48,
    174, 220, 46, 177, 220, 45, 180, 221, 43, 183, 221, 42, 186, 222, 41, 188, 222, 39, 191, 223, 38, 194, 223, 37,
    197, 223, 36, 200, 224, 35, 202, 224, 33, 205, 225, 32, 208, 225, 32, 210, 225, 31, 213, 226, 30, 216, 226, 29,
    218, 226, 29, 221, 227, 28, 224, 227, 28, 226, 227, 27, 228, 228, 27, 231, 228, 27, 233, 228, 27, 236, 229, 27,
    238, 229, 27, 240, 229, 28, 242, 230, 28, 244, 230, 29, 246, 230, 30, 248, 231, 31, 250, 231, 32, 252, 231, 33,
};

static const uint8_t LUT_INFERNO[256 * 3] = {
    0, 0, 0, 0, 1, 0, 0, 1, 3, 1, 2, 6, 1, 2, 10, 2, 3, 13, 2, 3, 17, 3, 4, 20,
    4, 4, 23, 4, 4, 26, 5, 5, 29, 6, 5, 32, 7, 5, 34, 8, 6, 37, 9, 6, 40, 10, 6, 42,
    11, 6, 44, 12, 7, 47, 13, 7, 49, 15, 7, 51, 16, 7, 53, 17, 8, 55, 19, 8, 57, 20, 8, 59,
    21, 8, 61, 23, 8, 63, 24, 8, 65, 26, 9, 67, 27, 9, 68, 29, 9, 70, 30, 9, 72, 32, 9, 73,
    33, 9, 75, 35, 10, 76, 37, 10, 77, 38, 10, 79, 40, 10, 80, 41, 10, 81, 43, 10, 83, 45, 11, 84,
    46, 11, 85, 48, 11, 86, 50, 11, 87, 51, 11, 88, 53, 12, 89, 55, 12, 90, 56, 12, 91, 58, 12, 92,
    60, 12, 93, 61, 13, 94, 63, 13, 95, 65, 13, 96, 67, 13, 96, 68, 14, 97, 70, 14, 98, 72, 14, 99,
    73, 14, 99, 75, 15, 100, 77, 15, 101, 78, 15, 101, 80, 15, 102, 82, 16, 102, 83, 16, 103, 85, 16, 103,
    87, 17, 104, 88, 17, 104, 90, 17, 105, 92, 18, 105, 93, 18, 105, 95, 18, 106, 97, 19, 106, 98, 19, 106,
    100, 20, 107, 102, 20, 107, 103, 20, 107, 105, 21, 107, 106, 21, 107, 108, 22, 108, 110, 22, 108, 111, 22, 108,
    113, 23, 108, 114, 23, 108, 116, 24, 108, 118, 24, 108, 119, 25, 108, 121, 25, 108, 122, 26, 108, 124, 26, 108,
    126, 27, 107, 127, 27, 107, 129, 28, 107, 130, 28, 107, 132, 29, 107, 133, 29, 106, 135, 30, 106, 137, 31, 106,
    138, 31, 105, 140, 32, 105, 141, 32, 104, 143, 33, 104, 144, 34, 104, 146, 34, 103, 147, 35, 103, 149, 35, 102,
    151, 36, 102, 152, 37, 101, 154, 37, 100, 155, 38, 100, 157, 39, 99, 158, 39, 98, 160, 40, 98, 161, 41, 97,
    163, 41, 96, 164, 42, 95, 166, 43, 95, 167, 44, 94, 169, 44, 93, 170, 45, 92, 172, 46, 91, 173, 47, 90,
    175, 47, 89, 176, 48, 88, 178, 49, 87, 179, 50, 86, 181, 51, 85, 182, 52, 84, 183, 52, 83, 185, 53, 82,
    186, 54, 81, 188, 55, 80, 189, 56, 79, 191, 57, 78, 192, 58, 76, 193, 59, 75, 195, 60, 74, 196, 61, 73,
    198, 61, 72, 199, 62, 70, 200, 63, 69, 202, 64, 68, 203, 65, 67, 204, 66, 65, 206, 67, 64, 207, 69, 63,
    208, 70, 62, 209, 71, 60, 211, 72, 59, 212, 73, 58, 213, 74, 56, 215, 75, 55, 216, 76, 54, 217, 77, 52,
    218, 79, 51, 219, 80, 50, 220, 81, 49, 222, 82, 47, 223, 83, 46, 224, 85, 45, 225, 86, 43, 226, 87, 42,
    227, 89, 41, 228, 90, 40, 229, 91, 38, 230, 93, 37, 231, 94, 36, 232, 95, 35, 233, 97, 34, 234, 98, 33,
    235, 100, 31, 236, 101, 30, 237, 102, 29, 237, 104, 28, 238, 105, 27, 239, 107, 26, 240, 109, 25, 240, 110, 24,
    241, 112, 23, 242, 113, 22, 243, 115, 22, 243, 116, 21, 244, 118, 20, 244, 120, 19, 245, 121, 19, 245, 123, 18,
    246, 125, 17, 246, 127, 17, 247, 128, 16, 247, 130, 16, 248, 132, 15, 248, 134, 15, 248, 136, 15, 249, 137, 15,
    249, 139, 14, 249, 141, 14, 250, 143, 14, 250, 145, 14, 250, 147, 14, 250, 149, 14, 250, 151, 14, 250, 153, 15,
    250, 155, 15, 251, 157, 15, 251, 159, 16, 251, 161, 16, 251, 163, 17, 251, 165, 18, 250, 167, 18, 250, 169, 19,
    250, 171, 20, 250, 173, 21, 250, 175, 22, 250, 177, 23, 250, 179, 24, 249, 181, 26, 249, 183, 27, 249, 185, 28,
    249, 188, 30, 249, 190, 32, 248, 192, 33, 248, 194, 35, 248, 196, 37, 247, 198, 39, 247, 200, 41, 247, 202, 43,
    247, 204, 46, 246, 206, 48, 246, 209, 51, 246, 211, 53, 245, 213, 56, 245, 215, 59, 245, 217, 62, 245, 219, 65,
    244, 221, 68, 244, 223, 71, 244, 225, 74, 244, 227, 78, 244, 229, 81, 243, 231, 85, 243, 232, 88, 243, 234, 92,
    243, 236, 96, 243, 238, 100, 243, 240, 104, 243, 241, 109, 244, 243, 113, 244, 244, 117, 244, 246, 122, 244, 248, 127,
    245, 249, 131, 245, 250, 136, 246, 252, 141, 246, 253, 146, 247, 254, 151, 248, 255, 157, 249, 255, 162, 250, 255, 168,
};

static const uint8_t LUT_GRAY[256 * 3] = {
    0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3, 4, 4, 4, 5, 5, 5, 6, 6, 6, 7, 7, 7,
    8, 8, 8, 9, 9, 9, 10, 10, 10, 11, 11, 11, 12, 12, 12, 13, 13, 13, 14, 14, 14, 15, 15, 15,
    16, 16, 16, 17, 17, 17, 18, 18, 18, 19, 19, 19, 20, 20, 20, 21, 21, 21, 22, 22, 22, 23, 23, 23,
    24, 24, 24, 25, 25, 25, 26, 26, 26, 27, 27, 27, 28, 28, 28, 29, 29, 29, 30, 30, 30, 31, 31, 31,
    32, 32, 32, 33, 33, 33, 34, 34, 34, 35, 35, 35, 36, 36, 36, 37, 37, 37, 38, 38, 38, 39, 39, 39,
    40, 40, 40, 41, 41, 41, 42, 42, 42, 43, 43, 43, 44, 44, 44, 45, 45, 45, 46, 46, 46, 47, 47, 47,
    48, 48, 48, 49, 49, 49, 50, 50, 50, 51, 51, 51, 52, 52, 52, 53, 53, 53, 54, 54, 54, 55, 55, 55,
    56, 56, 56, 57, 57, 57, 58, 58, 58, 59, 59, 59, 60, 60, 60, 61, 61, 61, 62, 62, 62, 63, 63, 63,
    64, 64, 64, 65, 65, 65, 66, 66, 66, 67, 67, 67, 68, 68, 68, 69, 69, 69, 70, 70, 70, 71, 71, 71,
    72, 72, 72, 73, 73, 73, 74, 74, 74, 75, 75, 75, 76, 76, 76, 77, 77, 77, 78, 78, 78, 79, 79, 79,
    80, 80, 80, 81, 81, 81, 82, 82, 82, 83, 83, 83, 84, 84, 84, 85, 85, 85, 86, 86, 86, 87, 87, 87,
    88, 88, 88, 89, 89, 89, 90, 90, 90, 91, 91, 91, 92, 92, 92, 93, 93, 93, 94, 94, 94, 95, 95, 95,
    96, 96, 96, 97, 97, 97, 98, 98, 98, 99, 99, 99, 100, 100, 100, 101, 101, 101, 102, 102, 102, 103, 103, 103,
    104, 104, 104, 105, 105, 105, 106, 106, 106, 107, 107, 107, 108, 108, 108, 109, 109, 109, 110, 110, 110, 111, 111, 111,
    112, 112, 112, 113, 113, 113, 114, 114, 114, 115, 115, 115, 116, 116, 116, 117, 117, 117, 118, 118, 118, 119, 119, 119,
    120, 120, 120, 121, 121, 121, 122, 122, 122, 123, 123, 123, 124, 124, 124, 125, 125, 125, 126, 126, 126, 127, 127, 127,
    128, 128, 128, 129, 129, 129, 130, 130, 130, 131, 131, 131, 132, 132, 132, 133, 133, 133, 134, 134, 134, 135, 135, 135,
    136, 136, 136, 137, 137, 137, 138, 138, 138, 139, 139, 139, 140, 140, 140, 141, 141, 141, 142, 142, 142, 143, 143, 143,
    144, 144, 144, 145, 145, 145, 146, 146, 146, 147, 147, 147, 148, 148, 148, 149, 149, 149, 150, 150, 150, 151, 151, 151,
    152, 152, 152, 153, 153, 153, 154, 154, 154, 155, 155, 155, 156, 156, 156, 157, 157, 157, 158, 158, 158, 159, 159, 159,
    160, 160, 160, 161, 161, 161, 162, 162, 162, 163, 163, 163, 164, 164, 164, 165, 165, 165, 166, 166, 166, 167, 167, 167,
    168, 168, 168, 169, 169, 169, 170, 170, 170, 171, 171, 171, 172, 172, 172, 173, 173, 173, 174, 174, 174, 175, 175, 175,
    176, 176, 176, 177, 177, 177, 178, 178, 178, 179, 179, 179, 180, 180, 180, 181, 181, 181, 182, 182, 182, 183, 183, 183,
    184, 184, 184, 185, 185, 185, 186, 186, 186, 187, 187, 187, 188, 188, 188, 189, 189, 189, 190, 190, 190, 191, 191, 191,
    192, 192, 192, 193, 193, 193, 194, 194, 194, 195, 195, 195, 196, 196, 196, 197, 197, 197, 198, 198, 198, 199, 199, 199,
    200, 200, 200, 201, 201, 201, 202, 202, 202, 203, 203, 203, 204, 204, 204, 205, 205, 205, 206, 206, 206, 207, 207, 207,
    208, 208, 208, 209, 209, 209, 210, 210, 210, 211, 211, 211, 212, 212, 212, 213, 213, 213, 214, 214, 214, 215, 215, 215,
    216, 216, 216, 217, 217, 217, 218, 218, 218, 219, 219, 219, 220, 220, 220, 221, 221, 221, 222, 222, 222, 223, 223, 223,
    224, 224, 224, 225, 225, 225, 226, 226, 226, 227, 227, 227, 228, 228, 228, 229, 229, 229, 230, 230, 230, 231, 231, 231,
    232, 232, 232, 233, 233, 233, 234, 234, 234, 235, 235, 235, 236, 236, 236, 237, 237, 237, 238, 238, 238, 239, 239, 239,
    240, 240, 240, 241, 241, 241, 242, 242, 242, 243, 243, 243, 244, 244, 244, 245, 245, 245, 246, 246, 246, 247, 247, 247,
    248, 248, 248, 249, 249, 249, 250, 250, 250, 251, 251, 251, 252, 252, 252, 253, 253, 253, 254, 254, 254, 255, 255, 255,
};

const uint8_t *cs_img_colormap_lut(cs_img_colormap c) {
    switch (c) {
    case CS_IMG_CMAP_JET: return LUT_JET;
    case CS_IMG_CMAP_TURBO: return LUT_TURBO;
    case CS_IMG_CMAP_VIRIDIS: return LUT_VIRIDIS;
    case CS_IMG_CMAP_INFERNO: return LUT_INFERNO;
    case CS_IMG_CMAP_GRAY: break;
    }
    return LUT_GRAY;
}

static const char *const CMAP_NAMES[] = {"jet", "turbo", "viridis", "inferno", "gray"};

const char *cs_img_colormap_name(cs_img_colormap c) {
    return (unsigned)c < sizeof CMAP_NAMES / sizeof *CMAP_NAMES ? CMAP_NAMES[c] : "unknown";
}

cs_status cs_img_colormap_parse(const char *name, cs_img_colormap *out, cs_error *err) {
    for (unsigned i = 0; name && i < sizeof CMAP_NAMES / sizeof *CMAP_NAMES; i++) {
        if (!strcasecmp(name, CMAP_NAMES[i])) {
            *out = (cs_img_colormap)i;
            return CS_OK;
        }
    }
    if (name && !strcasecmp(name, "grey")) {
        *out = CS_IMG_CMAP_GRAY;
        return CS_OK;
    }
    return cs_errorf(err, CS_EINVAL,
                     "unknown colormap '%s' (expected jet, turbo, viridis, inferno or gray)",
                     name ? name : "");
}

/* cv2.resize INTER_LINEAR taps for one axis: n outputs spanning [b0, b1)
 * of a display axis mapped onto src_n cells. */
typedef struct taps {
    int *i0;
    float *w1; /* weight of i0 + 1; i0 gets 1 - w1 */
} taps;

static int taps_make(taps *t, int n, int first, double b0, double b1, int src_n) {
    t->i0 = malloc(sizeof(int) * (size_t)n);
    t->w1 = malloc(sizeof(float) * (size_t)n);
    if (!t->i0 || !t->w1) return -1;
    const double scale = src_n / (b1 - b0);
    for (int k = 0; k < n; k++) {
        double s = ((first + k) + 0.5 - b0) * scale - 0.5;
        int i = (int)floor(s);
        double f = s - i;
        if (i < 0) {
            i = 0;
            f = 0.0;
        }
        if (i >= src_n - 1) {
            i = src_n - 1;
            f = 0.0;
        }
        t->i0[k] = i;
        t->w1[k] = (float)f;
    }
    return 0;
}

static void taps_free(taps *t) {
    free(t->i0);
    free(t->w1);
}

static inline float cam_at(const float *cam, int cw, int ch, const taps *tx, int kx,
                           const taps *ty, int ky) {
    const int x = tx->i0[kx], y = ty->i0[ky];
    const int x1 = x + 1 < cw ? x + 1 : x, y1 = y + 1 < ch ? y + 1 : y;
    const float fx = tx->w1[kx], fy = ty->w1[ky];
    const float a = cam[y * cw + x] * (1 - fx) + cam[y * cw + x1] * fx;
    const float b = cam[y1 * cw + x] * (1 - fx) + cam[y1 * cw + x1] * fx;
    float v = a * (1 - fy) + b * fy;
    if (!(v > 0.0f)) v = 0.0f; /* also maps NaN to 0 */
    if (v > 1.0f) v = 1.0f;
    return v;
}

/* The blend of show_cam_on_image for n colour bytes c and image bytes p is
 * ka * c + ki * p in float.  blend_max returns its maximum (or vmax if
 * larger), blend_row writes it scaled by norm over p, truncated to a byte
 * like np.uint8 (v >= 0; what is not below 255 is 255).
 * Both go 16 bytes at a time so that gcc vectorises them at -O2; the float
 * operations are the same, in the same order, as one byte at a time (and a
 * maximum does not depend on the order it is taken in), so the output is
 * unchanged. */
enum { BLEND_BLOCK = 16 };

static float blend_max(const uint8_t *c, const uint8_t *p, size_t n, float ka, float ki,
                       float vmax) {
    float m[BLEND_BLOCK];
    for (int j = 0; j < BLEND_BLOCK; j++) m[j] = vmax;
    size_t i = 0;
    for (; i + BLEND_BLOCK <= n; i += BLEND_BLOCK)
        for (int j = 0; j < BLEND_BLOCK; j++) {
            const float v = ka * c[i + j] + ki * p[i + j];
            m[j] = v > m[j] ? v : m[j];
        }
    for (; i < n; i++) {
        const float v = ka * c[i] + ki * p[i];
        if (v > vmax) vmax = v;
    }
    for (int j = 0; j < BLEND_BLOCK; j++)
        if (m[j] > vmax) vmax = m[j];
    return vmax;
}

static inline uint8_t blend_byte(uint8_t c, uint8_t p, float ka, float ki, float norm) {
    const float v = ka * c * norm + ki * p * norm;
    return (uint8_t)(v < 255.0f ? (int32_t)v : 255);
}

static void blend_row(const uint8_t *restrict c, uint8_t *restrict p, size_t n, float ka,
                      float ki, float norm) {
    size_t i = 0;
    for (; i + BLEND_BLOCK <= n; i += BLEND_BLOCK)
        for (int j = 0; j < BLEND_BLOCK; j++) p[i + j] = blend_byte(c[i + j], p[i + j], ka, ki, norm);
    for (; i < n; i++) p[i] = blend_byte(c[i], p[i], ka, ki, norm);
}

static cs_status check_cam(const float *cam01, int cam_h, int cam_w, cs_error *err) {
    if (!cam01 || cam_h <= 0 || cam_w <= 0 || cam_h > 4096 || cam_w > 4096)
        return cs_errorf(err, CS_EINVAL, "CAM map %dx%d invalid", cam_w, cam_h);
    return CS_OK;
}

int cs_img_display_size(int w, int h, int max_side, int *dw, int *dh) {
    if (max_side <= 0) max_side = 800;
    *dw = w;
    *dh = h;
    if (w <= max_side && h <= max_side) return 0;
    double s = (double)max_side / (w > h ? w : h);
    *dw = (int)lround(w * s);
    *dh = (int)lround(h * s);
    if (*dw < 1) *dw = 1;
    if (*dh < 1) *dh = 1;
    return 1;
}

/* The overlay's work over the box, split into stripes of rows that any
 * thread may take (cs_img_par): pass 1 colours the upsampled CAM and finds
 * each stripe's maximum of the blend, pass 2 normalises by the maximum over
 * all stripes.  A maximum does not depend on the order it is taken in, so
 * the bytes are those of one stripe. */
typedef struct overlay_job {
    const float *cam01;
    int cam_h, cam_w;
    const uint8_t *lut;
    taps tx, ty;
    uint8_t *colour; /* the colormapped CAM over the box, rowlen x bh */
    uint8_t *disp;   /* display image, W x H x 3, blended in place */
    float *crow;     /* cam_w floats per stripe: a CAM row upsampled vertically */
    size_t rowlen, stride;
    int x0, y0, bh, nstripes;
    float ka, ki, norm;
    float vmax[CS_IMG_PAR_MAX];
} overlay_job;

static void stripe_rows(const overlay_job *o, int i, int *r0, int *r1) {
    *r0 = (int)((long long)o->bh * i / o->nstripes);
    *r1 = (int)((long long)o->bh * (i + 1) / o->nstripes);
}

static void overlay_pass1(void *arg, int i) {
    overlay_job *o = arg;
    int r0, r1;
    stripe_rows(o, i, &r0, &r1);
    float *crow = o->crow + (size_t)i * o->cam_w;
    const int bw = (int)(o->rowlen / 3), cam_w = o->cam_w, cam_h = o->cam_h;
    float vmax = 0.0f;
    for (int ky = r0; ky < r1; ky++) {
        const int cy0 = o->ty.i0[ky], cy1 = cy0 + 1 < cam_h ? cy0 + 1 : cy0;
        const float fy = o->ty.w1[ky];
        for (int k = 0; k < cam_w; k++)
            crow[k] = o->cam01[cy0 * cam_w + k] * (1 - fy) + o->cam01[cy1 * cam_w + k] * fy;
        uint8_t *crgb = o->colour + (size_t)ky * o->rowlen;
        for (int kx = 0; kx < bw; kx++) {
            const int cx0 = o->tx.i0[kx], cx1 = cx0 + 1 < cam_w ? cx0 + 1 : cx0;
            const float fx = o->tx.w1[kx];
            float m = crow[cx0] * (1 - fx) + crow[cx1] * fx;
            if (!(m > 0.0f)) m = 0.0f; /* also maps NaN to 0 */
            if (m > 1.0f) m = 1.0f;
            const int id = (int)(255.0f * m); /* np.uint8 truncates */
            memcpy(crgb + kx * 3, o->lut + id * 3, 3);
        }
        const uint8_t *row = o->disp + (size_t)(o->y0 + ky) * o->stride + (size_t)o->x0 * 3;
        vmax = blend_max(crgb, row, o->rowlen, o->ka, o->ki, vmax);
    }
    o->vmax[i] = vmax;
}

static void overlay_pass2(void *arg, int i) {
    overlay_job *o = arg;
    int r0, r1;
    stripe_rows(o, i, &r0, &r1);
    for (int ky = r0; ky < r1; ky++)
        blend_row(o->colour + (size_t)ky * o->rowlen,
                  o->disp + (size_t)(o->y0 + ky) * o->stride + (size_t)o->x0 * 3, o->rowlen, o->ka,
                  o->ki, o->norm);
}

cs_status cs_img_overlay(const cs_image *img, const float *cam01, int cam_h, int cam_w,
                         const float *box, cs_img_colormap cmap, float alpha, int max_side,
                         cs_image *out, cs_error *err) {
    return cs_img_overlay_par(img, cam01, cam_h, cam_w, box, cmap, alpha, max_side, NULL, out, err);
}

cs_status cs_img_overlay_par(const cs_image *img, const float *cam01, int cam_h, int cam_w,
                             const float *box, cs_img_colormap cmap, float alpha, int max_side,
                             const cs_img_par *par, cs_image *out, cs_error *err) {
    cs_status st = check_cam(cam01, cam_h, cam_w, err);
    if (st != CS_OK) return st;
    if (!img || !img->rgb || img->channels != 3 || img->width <= 0 || img->height <= 0)
        return cs_errorf(err, CS_EINVAL, "overlay needs an RGB image");
    if (!(alpha >= 0.0f && alpha <= 1.0f))
        return cs_errorf(err, CS_EINVAL, "overlay alpha %g not in [0, 1]", (double)alpha);

    int w = img->width, h = img->height, dw, dh;
    cs_image disp = {0};
    if (cs_img_display_size(w, h, max_side, &dw, &dh)) {
        if ((st = cs_img_resize(img, dw, dh, CS_IMG_INTERP_BILINEAR, &disp, err)) != CS_OK) return st;
    } else {
        disp.width = w;
        disp.height = h;
        disp.channels = 3;
        disp.rgb = malloc((size_t)w * h * 3);
        if (!disp.rgb) return cs_errorf(err, CS_ENOMEM, "out of memory for the overlay");
        memcpy(disp.rgb, img->rgb, (size_t)w * h * 3);
    }
    disp.orig_width = disp.width;
    disp.orig_height = disp.height;
    const int W = disp.width, H = disp.height;
    const double sx = (double)W / w, sy = (double)H / h;
    double b[4] = {0, 0, W, H};
    if (box) {
        /* rounded to float, the box's own precision: a caller that scaled
         * the image and the box to display size itself (the service's prep
         * cache) then draws exactly what this scaling draws */
        b[0] = (float)(box[0] * sx);
        b[1] = (float)(box[1] * sy);
        b[2] = (float)(box[2] * sx);
        b[3] = (float)(box[3] * sy);
    }
    if (!(b[2] > b[0] && b[3] > b[1])) {
        cs_img_free(&disp);
        return cs_errorf(err, CS_EINVAL, "overlay box is empty");
    }
    /* display pixels whose centers fall inside the box get the heat */
    int x0 = (int)ceil(b[0] - 0.5), x1 = (int)ceil(b[2] - 0.5);
    int y0 = (int)ceil(b[1] - 0.5), y1 = (int)ceil(b[3] - 0.5);
    if (x0 < 0) x0 = 0;
    if (y0 < 0) y0 = 0;
    if (x1 > W) x1 = W;
    if (y1 > H) y1 = H;
    if (x1 <= x0 || y1 <= y0) {
        *out = disp; /* box lies outside the picture: nothing to blend */
        return CS_OK;
    }
    const int bw = x1 - x0, bh = y1 - y0;
    overlay_job o = {.cam01 = cam01, .cam_h = cam_h, .cam_w = cam_w, .lut = cs_img_colormap_lut(cmap),
                     .disp = disp.rgb, .rowlen = (size_t)bw * 3, .stride = (size_t)W * 3,
                     .x0 = x0, .y0 = y0, .bh = bh,
                     .ka = alpha / 255.0f, .ki = (1.0f - alpha) / 255.0f};
    /* a stripe is at least 32 rows: below that a thread costs more than it saves */
    o.nstripes = cs_img_par_ways(par, (size_t)bh, 32);
    o.colour = malloc(o.rowlen * (size_t)bh);
    o.crow = malloc(sizeof(float) * (size_t)cam_w * (size_t)o.nstripes);
    const int nomem = !o.colour || !o.crow || taps_make(&o.tx, bw, x0, b[0], b[2], cam_w) ||
                      taps_make(&o.ty, bh, y0, b[1], b[3], cam_h);
    if (!nomem) {
        cs_img_par_run(par, o.nstripes, overlay_pass1, &o);
        float vmax = 0.0f;
        for (int i = 0; i < o.nstripes; i++)
            if (o.vmax[i] > vmax) vmax = o.vmax[i];
        o.norm = vmax > 0.0f ? 255.0f / vmax : 0.0f;
        cs_img_par_run(par, o.nstripes, overlay_pass2, &o);
    }
    free(o.colour);
    free(o.crow);
    taps_free(&o.tx);
    taps_free(&o.ty);
    if (nomem) {
        cs_img_free(&disp);
        return cs_errorf(err, CS_ENOMEM, "out of memory for the overlay");
    }
    *out = disp;
    return CS_OK;
}

cs_status cs_img_heatmap(const float *cam01, int cam_h, int cam_w, int out_w, int out_h,
                         cs_img_colormap cmap, cs_image *out, cs_error *err) {
    cs_status st = check_cam(cam01, cam_h, cam_w, err);
    if (st != CS_OK) return st;
    if (out_w <= 0 || out_h <= 0 || out_w > (1 << 15) || out_h > (1 << 15))
        return cs_errorf(err, CS_EINVAL, "heatmap size %dx%d out of range", out_w, out_h);
    const int C = cmap == CS_IMG_CMAP_GRAY ? 1 : 3;
    const uint8_t *lut = cs_img_colormap_lut(cmap);
    taps tx = {0}, ty = {0};
    uint8_t *px = malloc((size_t)out_w * out_h * C);
    if (!px || taps_make(&tx, out_w, 0, 0, out_w, cam_w) || taps_make(&ty, out_h, 0, 0, out_h, cam_h)) {
        free(px);
        taps_free(&tx);
        taps_free(&ty);
        return cs_errorf(err, CS_ENOMEM, "out of memory for the heatmap");
    }
    for (int y = 0; y < out_h; y++) {
        uint8_t *row = px + (size_t)y * out_w * C;
        for (int x = 0; x < out_w; x++) {
            const int v = (int)(255.0f * cam_at(cam01, cam_w, cam_h, &tx, x, &ty, y));
            if (C == 1) row[x] = (uint8_t)v;
            else memcpy(row + x * 3, lut + v * 3, 3);
        }
    }
    taps_free(&tx);
    taps_free(&ty);
    out->width = out->orig_width = out_w;
    out->height = out->orig_height = out_h;
    out->channels = C;
    out->rgb = px;
    return CS_OK;
}
