import { LivePage } from "./live-page";

export default function Page() {
  return <LivePage />;
}
