import type { NextConfig } from "next";

// Static export: `next build` writes plain files to out/, served by Envoy on the same origin as the
// gRPC-Web API (/avatar.v1.SessionService/...) and the HLS streams (/hls/...).
const nextConfig: NextConfig = {
  output: "export",
  trailingSlash: false,
  images: { unoptimized: true },
  poweredByHeader: false,
  reactStrictMode: true,
};

export default nextConfig;
